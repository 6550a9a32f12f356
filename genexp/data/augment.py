"""Batched image augmentation on the training device: random translation + horizontal flip.

One gather per batch, driven by the trainer's `torch.Generator` (so runs are reproducible on
any device), instead of a per-image PIL loop. This is the augmentation of the VAT and
"realistic evaluation" papers (Miyato et al. 2018; Oliver et al. 2018): translate by up to
`max_shift` pixels with reflect padding, then flip left-right with probability 1/2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from genexp.errors import GenexpError


def translate_flip(x: Tensor, generator: torch.Generator | None = None, max_shift: int = 2, flip: bool = True,
                   padding_mode: str = "reflect") -> Tensor:
    """x: (B, C, H, W) float. Each image is shifted by (dy, dx) ∈ [-max_shift, max_shift]² and,
    with probability 1/2, mirrored; out-of-image pixels come from `padding_mode` padding
    (reflect | replicate | constant (zeros)). Random numbers come from `generator` on its device."""
    if x.dim() != 4:
        raise ValueError(f"translate_flip expects (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    s = int(max_shift)
    if s == 0 and not flip:
        return x
    dev = generator.device if generator is not None else x.device
    # Reflect padding needs pad < size; fall back to replicate for tiny images.
    mode = padding_mode if not (padding_mode == "reflect" and s >= min(h, w)) else "replicate"
    xp = F.pad(x, (s, s, s, s), mode=mode) if s > 0 else x
    if s > 0:
        off = torch.randint(0, 2 * s + 1, (2, b), generator=generator, device=dev).to(x.device)
    else:
        off = torch.zeros(2, b, dtype=torch.long, device=x.device)
    rows = torch.arange(h, device=x.device).unsqueeze(0) + off[0].unsqueeze(1)    # (B, H)
    cols = torch.arange(w, device=x.device).unsqueeze(0).expand(b, w)              # (B, W)
    if flip:
        mirror = torch.rand(b, generator=generator, device=dev).to(x.device) < 0.5
        cols = torch.where(mirror.unsqueeze(1), (w - 1) - cols, cols)
    cols = cols + off[1].unsqueeze(1)
    wp = w + 2 * s
    # Flat gather per (image, channel): index = row * padded_width + col.
    index = (rows.unsqueeze(2) * wp + cols.unsqueeze(1)).view(b, 1, h * w).expand(b, c, h * w)
    return xp.reshape(b, c, -1).gather(2, index).view(b, c, h, w)


@dataclass
class TranslateFlip:
    """The `augment` callable a Dataset carries: (x, generator) -> x, training batches only."""

    max_shift: int = 2
    flip: bool = True
    padding_mode: str = "reflect"

    def __post_init__(self) -> None:
        if int(self.max_shift) < 0:
            raise GenexpError(f"dataset.translate={self.max_shift} must be >= 0: set dataset.translate=2 (pixels) "
                              f"or 0 for no translation")
        if self.padding_mode not in ("reflect", "replicate", "constant"):
            raise GenexpError(f"dataset.padding_mode={self.padding_mode!r} is unknown: use reflect, replicate "
                              f"or constant")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return translate_flip(x, generator, self.max_shift, self.flip, self.padding_mode)


def image_augment(augment: bool, translate: int = 2, flip: bool = True,
                  padding_mode: str = "reflect") -> TranslateFlip | None:
    """The augment a dataset config asks for (None when off)."""
    if not augment or (int(translate) == 0 and not flip):
        return None
    return TranslateFlip(int(translate), bool(flip), padding_mode)
