"""Tiling a batch k times along dim 0, for regularizers that average over k noise draws."""
from __future__ import annotations

from torch import Tensor


def repeat_batch(t: Tensor | None, k: int, batch: int | None = None) -> Tensor | None:
    """k copies of a batch stacked along dim 0 (copy j is rows j·B … (j+1)·B − 1).

    With `batch`, only a tensor whose dim 0 is that batch size is tiled: a broadcastable mask
    (dim 0 of size 1) or a scalar stays as is.
    """
    if t is None or k == 1 or t.dim() == 0 or (batch is not None and t.shape[0] != batch):
        return t
    return t.repeat(k, *([1] * (t.dim() - 1)))
