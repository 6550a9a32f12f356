"""Random Gaussian inputs with random labels: for benchmarks and smoke tests of any input shape."""
from __future__ import annotations

from typing import Sequence

import torch

from genexp.data.dataset import Dataset


def load_random(shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, n_train: int = 2048, n_test: int = 512,
                seed: int = 0, val_size: float | int = 0.1) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    x = torch.randn(n, *shape, generator=g)
    y = torch.arange(n) % num_classes  # every class present, in equal numbers
    y = y[torch.randperm(n, generator=g)]
    return Dataset(name="random", x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:],
                   num_classes=num_classes, class_names=[str(i) for i in range(num_classes)], val_size=val_size)
