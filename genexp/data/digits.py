"""scikit-learn's 8×8 handwritten digits: 1,797 images, 10 classes, shipped with the package."""
from __future__ import annotations

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
    from sklearn.datasets import load_digits as sk_load_digits

    raw = sk_load_digits()
    x = torch.as_tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = raw.target
    train, test = stratified_holdout(y, test_fraction, test_seed)
    return Dataset(name="digits", x_train=x[train], y_train=as_long(y[train]), x_test=x[test],
                   y_test=as_long(y[test]), num_classes=10, class_names=[str(i) for i in range(10)],
                   val_size=val_size, augment=image_augment(augment, translate, flip=False, padding_mode="constant"),
                   views=image_views(TranslateFlip(int(translate), False, "constant"), max_value=1.0, digits=True))
