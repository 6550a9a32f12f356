"""scikit-learn's 8×8 handwritten digits: 1,797 images, 10 classes, shipped with the package."""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from genexp.data.augment import TranslateFlip, image_augment
from genexp.data.dataset import Dataset, as_long, stratified_holdout
from genexp.data.views import image_views


def load_digits(test_fraction: float = 0.3, test_seed: int = 0, val_size: float | int = 0.1, augment: bool = False,
                translate: int = 1) -> Dataset:
    """Pixels scaled to [0, 1], shaped (1, 8, 8). The test split is fixed by `test_seed` (not by
    `split_seed`), so every run of every method is scored on the same test images. Views for
    methods that ask for them: weak = shift by up to `translate` pixels (no flip: digits are not
    mirror-symmetric), strong = the digit-safe RandAugment + Cutout, then the weak shift."""
    images, y = digits_arrays()
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    train, test = stratified_holdout(y, test_fraction, test_seed)
    return Dataset(name="digits", x_train=x[train], y_train=as_long(y[train]), x_test=x[test],
                   y_test=as_long(y[test]), num_classes=10, class_names=[str(i) for i in range(10)],
                   val_size=val_size, augment=image_augment(augment, translate, flip=False, padding_mode="constant"),
                   views=image_views(TranslateFlip(int(translate), False, "constant"), max_value=1.0, digits=True))


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) of 0-16, labels): scikit-learn's digits.csv.gz read as its
    load_digits reads it, without importing scikit-learn (scipy, pandas: over a second at every
    command's start, for a 1797-row file). Through load_digits where the file is not found."""
    spec = importlib.util.find_spec("sklearn")
    roots = spec.submodule_search_locations if spec is not None else None
    path = Path(roots[0], "datasets", "data", "digits.csv.gz") if roots else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sk_load_digits

        raw = sk_load_digits()
        return raw.images, raw.target
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
