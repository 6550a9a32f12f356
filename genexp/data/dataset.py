"""The in-memory dataset every loader returns: whole splits as tensors (or raw texts)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor


@dataclass(slots=True)
class Dataset:
    """A train/test pair. `y_train == -1` marks rows that are unlabelled by nature (they only
    ever join the unlabelled pool). `x_*` is a float tensor, or a list of strings for text
    datasets until a model-specific encoder turns it into token ids (`mask_*` then marks real
    tokens). Slots: what a step adds to a dataset is a field declared here, not a new attribute."""

    name: str
    x_train: Tensor | list[str]
    y_train: Tensor
    x_test: Tensor | list[str]
    y_test: Tensor
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    mask_train: Tensor | None = None
    mask_test: Tensor | None = None
    val_size: float | int = 0.1
    # Applied on the training device to every batch (train and eval), e.g. uint8 -> normalised
    # float; lets the whole dataset stay on the device in its compact stored form.
    preprocess: Callable[[Tensor], Tensor] | None = None
    # Applied to training batches only, after preprocess: (x, generator) -> x.
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
    # The named views a method may ask for beyond the plain batch (genexp.data.views: weak, strong):
    # image datasets declare them; features and text have none.
    views: dict[str, Any] = field(default_factory=dict)
    # Set by the text encoders (genexp.data.text) when they turn texts into token ids: the model's
    # data-dependent constructor arguments (vocab_encode: vocab_size, token_counts) and the
    # vocabulary (id -> token; vocab_encode only).
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    vocab: list[str] | None = None
    # Set by genexp.data.features.hf_features: what the frozen-encoder features were encoded from
    # (its cache key: texts, encoder, settings). Not None = the inputs are such features.
    frozen_features: dict[str, Any] | None = None

    @property
    def is_text(self) -> bool:
        return isinstance(self.x_train, list) or self.mask_train is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        assert isinstance(self.x_train, Tensor), "encode text before asking for the input shape"
        return tuple(self.x_train.shape[1:])


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `fraction` of each class held out, reproducibly from `seed`."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        held.append(idx[: int(round(fraction * len(idx)))])
    held_out = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(len(y)), held_out)
    return keep, held_out


def as_long(y: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(y), dtype=torch.long)
