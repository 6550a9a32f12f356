"""Cross-entropy and KL divergence from logits, in float32 (or wider) whatever the logits' dtype."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from genexp.regularizers.precision import widen


def ce(logits: Tensor, y: Tensor, label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    """Cross-entropy in float32 (or wider)."""
    return F.cross_entropy(widen(logits), y, label_smoothing=label_smoothing, reduction=reduction)


def kl_from_logits(target_logits: Tensor, logits: Tensor, reduction: str = "mean") -> Tensor:
    """KL(p_target ‖ p) per sample, summed over classes. The target is used as given (detach it)."""
    return kl_from_log_target(F.log_softmax(widen(target_logits), dim=-1), logits, reduction)


def kl_from_log_target(logp_target: Tensor, logits: Tensor, reduction: str = "mean") -> Tensor:
    """`kl_from_logits` with the target's log-probabilities already computed (a caller that
    evaluates several KLs against one target computes them once)."""
    logq = F.log_softmax(widen(logits), dim=-1)
    if reduction == "none":
        return F.kl_div(logq, logp_target, reduction="none", log_target=True).sum(-1)
    kl = F.kl_div(logq, logp_target, reduction="sum", log_target=True)
    return kl if reduction == "sum" else kl / (logq.numel() // logq.shape[-1])  # mean over samples
