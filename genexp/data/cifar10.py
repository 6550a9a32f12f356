"""CIFAR-10: 50,000 training and 10,000 test 32×32 colour images, 10 classes.

Images stay uint8 (N, 3, 32, 32) in the Dataset (150 MB for the training set, on the device);
`preprocess` turns each batch into normalised floats (per-channel mean/std, the ZCA whitening
of Miyato et al. 2018, or plain [0, 1]) and `augment` translates and flips training batches
on the device (genexp/data/augment.py).

Files: the python-format batches (`cifar-10-batches-py` under `root`), fetched with
download=true by torchvision's downloader. `verify_md5=true` (default) compares every file with
the MD5 of the official release (torchvision's list); `verify_md5=false` reads any folder in the
same format (a re-packed subset, a fixture). The batches are pickles, and either way they are
read by genexp's array-only unpickler (genexp/data/safe_pickle.py), never by pickle.load: a
crafted file is refused before it can run anything.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genexp.data.augment import TranslateFlip, image_augment
from genexp.data.dataset import Dataset, as_long
from genexp.data.preprocess import IMAGE_NORMALIZATIONS, image_preprocess
from genexp.data.safe_pickle import READ_ERRORS, load_arrays
from genexp.data.views import image_views
from genexp.errors import GenexpError

FOLDER = "cifar-10-batches-py"
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST, META = ["test_batch"], "batches.meta"
FILES = [*TRAIN, *TEST, META]
PIXELS = 3 * 32 * 32


def _resolve_root(root: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(root))))


def _not_official(folder: Path) -> list[str]:
    """The files under `folder` whose MD5 is not the official release's (torchvision's list)."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    official = [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    return [name for name, md5 in official if not check_integrity(str(folder / name), md5)]


def _download(root: Path, folder: Path) -> None:
    """torchvision's download of the official archive (its MD5 checked), unless the files are there."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    if not _not_official(folder):
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except (OSError, RuntimeError, ValueError) as e:
        raise GenexpError(f"could not fetch CIFAR-10 into dataset.root={root} ({_first_line(e)}): without network "
                          f"access copy {FOLDER} there and set dataset.download=false") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _read_batch(path: Path) -> dict[str, Any]:
    """One batch file as a dict with str keys (Python 2 wrote them as str, Python 3 as bytes)."""
    try:
        with open(path, "rb") as f:
            obj = load_arrays(f)
    except READ_ERRORS as e:
        raise GenexpError(f"{path} is not a CIFAR-10 python batch ({_first_line(e)}): genexp reads only numpy arrays, "
                          f"lists, numbers and strings from it, so replace the file with the official one") from None
    if not isinstance(obj, dict):
        raise GenexpError(f"{path} holds a {type(obj).__name__}, not a CIFAR-10 batch dict: replace it with the "
                          f"official file")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _split(folder: Path, names: list[str], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) (each row of `data` is the R, G, B planes) and int64 labels."""
    images, labels = [], []
    for name in names:
        entry = _read_batch(folder / name)
        data, y = entry.get("data"), entry.get("labels", entry.get("fine_labels"))
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise GenexpError(f"{folder / name}: 'data' must be uint8 of shape (N, {PIXELS}), got {got}: the files "
                              f"must be the python-format batches of CIFAR-10")
        try:
            y = np.asarray(y, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            y = None
        if y is None or y.shape != (len(data),) or (y.size and (y.min() < 0 or y.max() >= num_classes)):
            raise GenexpError(f"{folder / name}: 'labels' must be {len(data)} integers in 0..{num_classes - 1}: the "
                              f"files must be the python-format batches of CIFAR-10")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _classes(folder: Path) -> list[str]:
    names = _read_batch(folder / META).get("label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, bytes)) for n in names):
        raise GenexpError(f"{folder / META}: 'label_names' must be a list of class names: the files must be the "
                          f"python-format batches of CIFAR-10")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def read_cifar10(root: str | Path, download: bool = False, verify_md5: bool = True
                 ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str]]:
    """((x_train, y_train), (x_test, y_test), class names), x uint8 (N, 3, 32, 32); every failure is
    one GenexpError line."""
    root = _resolve_root(str(root))
    folder = root / FOLDER
    if download and not verify_md5:
        raise GenexpError("dataset.download=true needs dataset.verify_md5=true (downloads are always checked)")
    if download:
        _download(root, folder)
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise GenexpError(f"CIFAR-10 is not under dataset.root={root} (missing {folder / missing[0]}): "
                          f"set dataset.download=true to fetch it (170 MB), or dataset.root=<folder that "
                          f"holds {FOLDER}>")
    if verify_md5:
        wrong = _not_official(folder)
        if wrong:
            raise GenexpError(f"the CIFAR-10 files under {folder} fail the MD5 check of the official release "
                              f"({wrong[0]}): delete the folder and set dataset.download=true, or set "
                              f"dataset.verify_md5=false for another copy in the same format")
    classes = _classes(folder)
    return _split(folder, TRAIN, len(classes)), _split(folder, TEST, len(classes)), classes


def load_cifar10(root: str = "~/.cache/genexp/data", download: bool = False, verify_md5: bool = True,
                 normalize: str = "channel", zca_epsilon: float = 1e-6, augment: bool = True, translate: int = 2,
                 flip: bool = True, padding_mode: str = "reflect", val_size: float | int = 5000) -> Dataset:
    if normalize not in IMAGE_NORMALIZATIONS:
        raise GenexpError(f"dataset.normalize={normalize!r} is unknown: use channel, zca or none")
    (x_np, y_train), (x_np_test, y_test), classes = read_cifar10(root, download, verify_md5)
    x_train, x_test = torch.from_numpy(x_np), torch.from_numpy(x_np_test)
    num_classes = len(classes)
    if len(np.unique(y_train)) < 2:
        raise GenexpError(f"the CIFAR-10 files under dataset.root={root} hold a single class: check the files")
    # ZCA and channel statistics are fitted on the training images only (never the test set).
    cache = _resolve_root(root) / "genexp-cache"
    pre = image_preprocess(x_train, normalize, zca_epsilon, cache_dir=cache)
    return Dataset(name="cifar10", x_train=x_train, y_train=as_long(y_train), x_test=x_test, y_test=as_long(y_test),
                   num_classes=num_classes, class_names=classes, val_size=val_size, preprocess=pre,
                   augment=image_augment(augment, translate, flip, padding_mode),
                   views=image_views(TranslateFlip(int(translate), bool(flip), padding_mode), max_value=255.0,
                                     digits=False))
