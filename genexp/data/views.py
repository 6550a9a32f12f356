"""The views a dataset offers of its training examples: named augmentations a method asks for
(`Method.views`), drawn per example from the run's generator, on the device the data lives on.

- `weak`: translate (+ flip where the data allows it), the dataset's own translate/flip settings;
- `strong`: RandAugment (two ops per image at random magnitudes) + Cutout, then the weak one:
  FixMatch's strong transform (flip-and-crop, RandAugment, Cutout; Sohn et al. 2020).

The trainer also has `plain`, the unlabelled input every batch gets today (preprocess, then the
dataset's `augment` when it is on); it needs no declaration. Every view of a batch is made from
the same stored rows, so the views of an example are views of the same example.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from genexp.data.augment import TranslateFlip

Augment = Callable[[Tensor, torch.Generator], Tensor]
Preprocess = Callable[[Tensor], Tensor]

PLAIN, WEAK, STRONG = "plain", "weak", "strong"


@dataclass
class ViewAugment:
    """One view of stored rows: `before` on the stored scale, then the dataset's preprocess, then
    `after` on the model's scale. Colour ops (solarize, posterize, equalize, ...) are defined on the
    image's own range, as on the PIL images of the reference code, so RandAugment runs before
    normalisation (ZCA or channel statistics); translate/flip run after it, as `augment` does."""

    before: Augment | None = None
    after: Augment | None = None

    def __call__(self, x: Tensor, generator: torch.Generator, preprocess: Preprocess | None) -> Tensor:
        if self.before is not None:
            x = self.before(x.float(), generator)
        if preprocess is not None:
            x = preprocess(x)
        if self.after is not None:
            x = self.after(x, generator)
        return x


def image_views(weak: TranslateFlip | None, *, max_value: float, digits: bool,
                strong_ops: int = 2, cutout: float = 0.5) -> dict[str, ViewAugment]:
    """The weak and strong views of an image dataset stored in [0, max_value]. `digits`: the
    digit-safe operation set (no flips, bounded rotation and shear, no colour ops)."""
    from genexp.data.randaugment import RandAugmentCutout

    strong = RandAugmentCutout(max_value=float(max_value), ops="digits" if digits else "natural",
                               n_ops=int(strong_ops), cutout=float(cutout))
    return {WEAK: ViewAugment(after=weak), STRONG: ViewAugment(before=strong, after=weak)}
