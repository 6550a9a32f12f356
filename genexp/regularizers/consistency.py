"""Consistency between two predictions (MATH.md §2) and the mean teacher that supplies one of them."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.regularizers.precision import widen


def softmax_mse(logits: Tensor, target_logits: Tensor) -> Tensor:
    """Batch mean of Σ_i (softmax(logits)_i − softmax(target)_i)², summed over classes.

    The target is used as given (detach it, or compute it without gradient)."""
    diff = F.softmax(widen(logits), dim=-1) - F.softmax(widen(target_logits), dim=-1)
    return diff.pow(2).sum(-1).mean()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """θ' ← d·θ' + (1 − d)·θ for every parameter; floating-point buffers (BatchNorm statistics)
    are averaged the same way, others (batch counters) copied."""
    for t, p in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
    for t, b in zip(teacher.buffers(), student.buffers()):
        if t.is_floating_point():
            t.mul_(decay).add_(b, alpha=1.0 - decay)
        else:
            t.copy_(b)
