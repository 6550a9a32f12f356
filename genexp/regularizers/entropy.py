"""Entropy minimisation (the "EntMin" term of VAT+EntMin, MATH.md §4)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from genexp.regularizers.precision import widen


def entropy_loss(logits: Tensor) -> Tensor:
    """Batch mean of H(softmax(logits)) = −Σ_i p_i log p_i (nats), classes on the last dim.

    Computed from log_softmax in float32 (or wider) so that p_i → 0 contributes 0 instead of 0·(−inf).
    """
    logp = F.log_softmax(widen(logits), dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()
