"""Autograd plumbing: the `forward` callable regularizers differentiate through, cutting a graph,
and a surrogate scalar that carries gradients taken elsewhere."""
from __future__ import annotations

from typing import Callable

from torch import Tensor

Forward = Callable[[Tensor], Tensor]


def detached(t: Tensor) -> Tensor:
    """t without its graph; t itself when it has none (no op on the hot path)."""
    return t.detach() if t.requires_grad else t


def surrogate(value: Tensor, params: list[Tensor], grads: list[Tensor]) -> Tensor:
    """A scalar equal to `value` whose backward deposits `grads` into `params`.

    For gradients that must be taken inside a context (e.g. noisy or shifted weights restored
    on exit) while the trainer calls backward() later.
    """
    s = sum((p * g.detach()).sum() for p, g in zip(params, grads))
    return value.detach() + (s - s.detach())
