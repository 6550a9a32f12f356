"""Pseudo-labels (Lee 2013) with a confidence threshold (Oliver et al. 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genexp.regularizers.precision import widen
from genexp.regularizers.weak_strong import hard_pseudo_label_loss


def pseudo_label_loss(logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """(1/B) Σ_b 1[max_i p_i(x_b) ≥ threshold] · CE(logits_b, ŷ_b), ŷ_b = argmax_i p_i(x_b), and the
    0/1 mask of confident examples. ŷ and the mask are taken without gradient from the same
    logits; unconfident examples count as 0 in the mean over the whole batch."""
    logits = widen(logits)
    with torch.no_grad():
        conf, pseudo = F.softmax(logits, dim=-1).max(dim=-1)
        mask = (conf >= threshold).to(logits.dtype)
    return hard_pseudo_label_loss(logits, pseudo, mask), mask
