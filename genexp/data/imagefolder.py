"""Your own images in torchvision's ImageFolder layout: root/<class>/<image>.

Images are resized to `image_size`² and kept as uint8 (N, C, H, W); `preprocess` normalises
each batch on the device (per-channel mean/std of the training images, ZCA, or [0, 1]). The
test split is `test_root` (same layout, classes a subset of the training classes) or a
seeded, stratified `test_fraction`. `unlabeled_root` (any folder tree of images) adds
unlabelled images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genexp.data.augment import TranslateFlip, image_augment
from genexp.data.dataset import Dataset, as_long
from genexp.data.preprocess import IMAGE_NORMALIZATIONS, image_preprocess
from genexp.data.userdata import split_test, user_path
from genexp.data.views import image_views
from genexp.errors import GenexpError


def _loader(channels: int):
    from PIL import Image

    mode = {1: "L", 3: "RGB"}[channels]

    def load(path: str):
        with open(path, "rb") as f:
            return Image.open(f).convert(mode)

    return load


def _transform(image_size: int):
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((image_size, image_size)), transforms.PILToTensor()])


def _stack(samples, transform, loader, key: str) -> torch.Tensor:
    images = []
    for path in samples:
        try:
            images.append(transform(loader(path)))
        except Exception as e:  # PIL's UnidentifiedImageError, truncated files, ...
            raise GenexpError(f"{key}: could not read the image {path} ({type(e).__name__}): remove or fix it") from None
    return torch.stack(images)


def _folder(root: Path, key: str, loader):
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(str(root), loader=loader)
    except FileNotFoundError as e:
        raise GenexpError(f"{key}={root}: {str(e).splitlines()[0]}. Lay it out as {key}/<class>/<image>.png") from None
    return ds


def load_imagefolder(root: str | None = None, test_root: str | None = None, unlabeled_root: str | None = None,
                     image_size: int = 32, channels: int = 3, test_fraction: float = 0.2, test_seed: int = 0,
                     normalize: str = "channel", zca_epsilon: float = 1e-2, augment: bool = False,
                     translate: int = 2, flip: bool = True, padding_mode: str = "reflect",
                     val_size: float | int = 0.1) -> Dataset:
    if normalize not in IMAGE_NORMALIZATIONS:
        raise GenexpError(f"dataset.normalize={normalize!r} is unknown: use channel, zca or none")
    if channels not in (1, 3):
        raise GenexpError(f"dataset.channels={channels} is not supported: use 3 (RGB) or 1 (grayscale)")
    if not isinstance(image_size, int) or image_size < 1:
        raise GenexpError(f"dataset.image_size={image_size} must be a positive integer: set e.g. dataset.image_size=32")
    r = user_path(root, "dataset.root", "a folder with one sub-folder of images per class", directory=True)
    transform, loader = _transform(image_size), _loader(channels)
    train = _folder(r, "dataset.root", loader)
    classes = list(train.classes)
    if len(classes) < 2:
        raise GenexpError(f"dataset.root={root} has a single class folder ({classes[0]!r}): a classifier needs at "
                          f"least 2 class folders")
    x = _stack([p for p, _ in train.samples], transform, loader, "dataset.root")
    y = np.asarray(train.targets, dtype=np.int64)
    if test_root:
        tr = user_path(test_root, "dataset.test_root", "a folder laid out like dataset.root", directory=True)
        test = _folder(tr, "dataset.test_root", loader)
        unknown = [c for c in test.classes if c not in train.class_to_idx]
        if unknown:
            raise GenexpError(f"dataset.test_root={test_root} has the class folder {unknown[0]!r}, which "
                              f"dataset.root lacks: use the same class folders")
        x_test = _stack([p for p, _ in test.samples], transform, loader, "dataset.test_root")
        y_test = np.asarray([train.class_to_idx[test.classes[t]] for t in test.targets], dtype=np.int64)
    else:
        tr_idx, te_idx = split_test(y, test_fraction, test_seed)
        x, x_test, y, y_test = x[tr_idx], x[te_idx], y[tr_idx], y[te_idx]
    if unlabeled_root:
        from torchvision.datasets.folder import IMG_EXTENSIONS

        ur = user_path(unlabeled_root, "dataset.unlabeled_root", "a folder of unlabelled images", directory=True)
        files = sorted(str(p) for p in ur.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        if not files:
            raise GenexpError(f"dataset.unlabeled_root={unlabeled_root} holds no images "
                              f"({', '.join(IMG_EXTENSIONS)}): point it at a folder of images")
        x = torch.cat([x, _stack(files, transform, loader, "dataset.unlabeled_root")])
        y = np.concatenate([y, np.full(len(files), -1, dtype=np.int64)])
    pre = image_preprocess(x, normalize, zca_epsilon, cache_dir=None)
    return Dataset(name="imagefolder", x_train=x.contiguous(), y_train=as_long(y), x_test=x_test.contiguous(),
                   y_test=as_long(y_test), num_classes=len(classes), class_names=classes, val_size=val_size,
                   preprocess=pre, augment=image_augment(augment, translate, flip, padding_mode),
                   views=image_views(TranslateFlip(int(translate), bool(flip), padding_mode), max_value=255.0,
                                     digits=False))
