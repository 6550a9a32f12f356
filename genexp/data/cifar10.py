"""CIFAR-10 through torchvision: 50,000 training and 10,000 test 32×32 colour images, 10 classes.

Images stay uint8 (N, 3, 32, 32) in the Dataset (150 MB for the training set, on the device);
`preprocess` turns each batch into normalised floats (per-channel mean/std, the ZCA whitening
of Miyato et al. 2018, or plain [0, 1]) and `augment` translates and flips training batches
on the device (genexp/data/augment.py).

Files: torchvision's `cifar-10-batches-py` folder under `root` (fetched with download=true).
`verify_md5=true` (default) keeps torchvision's checksum check of the official files.
`verify_md5=false` reads any folder in the same format (a re-packed subset, a fixture): the
files then still go through torchvision's own reading code, only the fixed checksums are not
compared. Those files are pickles: only point it at a copy you trust.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from genexp.data.augment import image_augment
from genexp.data.dataset import Dataset, as_long
from genexp.data.preprocess import IMAGE_NORMALIZATIONS, image_preprocess
from genexp.errors import GenexpError

FOLDER = "cifar-10-batches-py"
FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def _unverified_cifar10():
    """torchvision's CIFAR10 with checksums off: torchvision compares each file against a
    hard-coded MD5 of the official release (in `_check_integrity` and again in `_load_meta`),
    which no other file in the same format can match. `check_integrity(path, None)` is
    torchvision's own "file exists" check, so clearing the MD5s keeps every other line of the
    real loading path (file list, unpickling, reshaping, class names)."""
    from torchvision.datasets import CIFAR10

    class UnverifiedCIFAR10(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

        def download(self) -> None:  # pragma: no cover - download always verifies
            raise GenexpError("dataset.download=true needs dataset.verify_md5=true (downloads are always checked)")

    return UnverifiedCIFAR10


def _resolve_root(root: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(root))))


def read_cifar10(root: str | Path, download: bool = False, verify_md5: bool = True):
    """(train, test) torchvision dataset objects; every failure is one GenexpError line."""
    from torchvision.datasets import CIFAR10

    root = _resolve_root(str(root))
    folder = root / FOLDER
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing and not download:
        raise GenexpError(f"CIFAR-10 is not under dataset.root={root} (missing {folder / missing[0]}): "
                          f"set dataset.download=true to fetch it (170 MB), or dataset.root=<folder that "
                          f"holds {FOLDER}>")
    if download and not verify_md5:
        raise GenexpError("dataset.download=true needs dataset.verify_md5=true (downloads are always checked)")
    cls = CIFAR10 if verify_md5 else _unverified_cifar10()
    try:
        if download:
            root.mkdir(parents=True, exist_ok=True)
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
    except GenexpError:
        raise
    except RuntimeError as e:
        if "corrupted" in str(e):
            raise GenexpError(f"the CIFAR-10 files under {folder} fail torchvision's MD5 check: delete the folder "
                              f"and set dataset.download=true, or set dataset.verify_md5=false for a trusted copy "
                              f"in the same format") from None
        raise GenexpError(f"could not read CIFAR-10 under {folder}: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise GenexpError(f"could not fetch or read CIFAR-10 into dataset.root={root}: {e}. Without network "
                          f"access copy {FOLDER} there and set dataset.download=false") from None
    except Exception as e:  # a malformed pickle in an unverified copy
        raise GenexpError(f"could not read CIFAR-10 under {folder} ({type(e).__name__}: {e}): the files must be "
                          f"the python-format batches (dicts with b'data' uint8 (N, 3072) and b'labels')") from None
    return train, test


def _as_nchw(data: np.ndarray) -> torch.Tensor:
    # torchvision stores HWC uint8; models want CHW.
    return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))


def load_cifar10(root: str = "~/.cache/genexp/data", download: bool = False, verify_md5: bool = True,
                 normalize: str = "channel", zca_epsilon: float = 1e-6, augment: bool = True, translate: int = 2,
                 flip: bool = True, padding_mode: str = "reflect", val_size: float | int = 5000) -> Dataset:
    if normalize not in IMAGE_NORMALIZATIONS:
        raise GenexpError(f"dataset.normalize={normalize!r} is unknown: use channel, zca or none")
    train, test = read_cifar10(root, download, verify_md5)
    x_train, x_test = _as_nchw(train.data), _as_nchw(test.data)
    y_train, y_test = np.asarray(train.targets), np.asarray(test.targets)
    num_classes = len(train.classes)
    if len(np.unique(y_train)) < 2:
        raise GenexpError(f"the CIFAR-10 files under dataset.root={root} hold a single class: check the files")
    # ZCA and channel statistics are fitted on the training images only (never the test set).
    cache = _resolve_root(root) / "genexp-cache"
    pre = image_preprocess(x_train, normalize, zca_epsilon, cache_dir=cache)
    return Dataset(name="cifar10", x_train=x_train, y_train=as_long(y_train), x_test=x_test, y_test=as_long(y_test),
                   num_classes=num_classes, class_names=list(train.classes), val_size=val_size, preprocess=pre,
                   augment=image_augment(augment, translate, flip, padding_mode))
