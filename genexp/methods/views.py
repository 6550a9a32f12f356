"""What a method's regularizer sees of a batch: the perturbable view (`h = model.embed(x)` and
`forward(z) = model.head(z, mask)`), the unlabelled inputs, and the clean unlabelled forward."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from genexp.errors import GenexpError
from genexp.methods.base import Batch
from genexp.models.base import GenexpModel
from genexp.regularizers.tiling import repeat_batch


@dataclass
class View:
    """A batch as regularizers see it: `h = model.embed(x)` (the input for image/vector models, the
    token-embedding output for text models), `forward(z) = model.head(z, mask)`, and `pmask`
    (broadcastable to h, 1 = may be perturbed; None for untokenised inputs)."""

    h: Tensor
    mask: Tensor | None
    pmask: Tensor | None
    forward: Callable[[Tensor], Tensor]


def head_fn(model: GenexpModel, mask: Tensor | None) -> Callable[[Tensor], Tensor]:
    """z ↦ model.head(z, mask); a z of k stacked copies of the batch (k-sample regularizers) gets
    the mask repeated k times."""

    def forward(z: Tensor) -> Tensor:
        m = mask
        if m is not None and z.shape[0] != m.shape[0] and z.shape[0] % m.shape[0] == 0:
            m = repeat_batch(m, z.shape[0] // m.shape[0])
        return model.head(z, m)

    return forward


def view(model: GenexpModel, x: Tensor, mask: Tensor | None) -> View:
    return View(h=model.embed(x), mask=mask, pmask=model.perturb_mask(mask), forward=head_fn(model, mask))


def labelled_view(model: GenexpModel, batch: Batch) -> View:
    return view(model, batch.x_l, batch.mask_l)


def unlabelled_inputs(batch: Batch, include_labeled: bool = False) -> tuple[Tensor, Tensor | None]:
    """(x_u, mask_u), with the labelled batch prepended when `include_labeled`."""
    if batch.x_u is None:
        raise GenexpError("this method needs an unlabelled batch but the trainer gave none: "
                          "set `uses_unlabeled = True` on the method class")
    x, mask = batch.x_u, batch.mask_u
    if include_labeled:
        x = torch.cat([batch.x_l, x])
        mask = None if mask is None else torch.cat([batch.mask_l, mask])
    return x, mask


def unlabelled_view(model: GenexpModel, batch: Batch, include_labeled: bool = False) -> View:
    return view(model, *unlabelled_inputs(batch, include_labeled))


def clean_logits(v: View, *, keep_graph: bool = False) -> Tensor:
    """The clean forward of a regularizer's (usually unlabelled) batch, inside the step's
    `frozen_bn_stats` (`Method.loss`). Without `keep_graph` no graph is built (a consistency target)."""
    with torch.set_grad_enabled(keep_graph and torch.is_grad_enabled()):
        return v.forward(v.h)
