"""Supervised adversarial perturbations: FGM (MATH.md §3) and PGD, per sample.

Both perturbation functions differentiate the cross-entropy with respect to the
perturbation only (``torch.autograd.grad``), so no parameter ``.grad`` is built or touched,
and they run in float32 (or wider) with autocast disabled, exactly like
:func:`genexp.regularizers.vat.vat_perturbation`. BatchNorm statistics: the caller freezes them
(a method's step does); called on their own with `model` (or a module as `forward`) they freeze
that module themselves.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.models.batchnorm import freezing, owning_module
from genexp.regularizers.divergence import ce
from genexp.regularizers.graph import Forward, detached
from genexp.regularizers.norms import per_sample_norm, unit
from genexp.regularizers.precision import autocast_off, compute_dtype, widen


def _ce_grad(forward: Forward, x: Tensor, y: Tensor) -> Tensor:
    """∇_x of Σ_b CE(forward(x)_b, y_b): summed so each sample's gradient is its own loss's."""
    x = x.detach().requires_grad_(True)
    # enable_grad: callers often build perturbations inside a no_grad evaluation block.
    with torch.enable_grad():
        loss = F.cross_entropy(widen(forward(x)), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, [x])
    return g


def fgm_perturbation(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    mask: Tensor | None = None,
    model: nn.Module | None = None,
) -> Tensor:
    """FGM: r = eps · g/‖g‖₂ per sample, with g = ∇_x CE(forward(x), y).

    `mask` (broadcastable to x, 1 = real position) keeps padding unperturbed and out of the
    norm. A sample whose gradient is exactly zero gets r = 0. BatchNorm statistics of
    `model` (or of `forward` when it is a module) are frozen here; no parameter gradient is
    touched. The result is detached and has x's dtype.
    """
    dtype = compute_dtype(x)
    x0 = x.detach().to(dtype)
    with freezing(owning_module(forward, model)), autocast_off(x):
        g = _ce_grad(forward, x0, y)
    return (eps * unit(g, mask)).to(x.dtype)


def _project_l2(delta: Tensor, eps: float) -> Tensor:
    # Scale down only samples outside the ball; samples inside are left bit-identical.
    factor = (eps / (per_sample_norm(delta) + 1e-12)).clamp(max=1.0)
    return delta * factor


def pgd_perturbation(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: Literal["l2", "linf"] = "l2",
    mask: Tensor | None = None,
    model: nn.Module | None = None,
    generator: torch.Generator | None = None,
    random_start: bool = True,
) -> Tensor:
    """Projected gradient ascent on CE(forward(x + r), y) inside a per-sample eps ball.

    ``norm="l2"``: r ← Π_{‖r‖₂≤eps}(r + alpha · g/‖g‖₂), norms per sample.
    ``norm="linf"``: r ← clamp(r + alpha · sign(g), -eps, eps).
    ``random_start`` draws r₀ uniformly in the L∞ box, or as a uniform-radius point along a
    Gaussian direction in the L2 ball; otherwise r₀ = 0. No box constraint on x + r is
    applied (inputs are usually normalised). Masked positions stay zero. Same guarantees as
    :func:`fgm_perturbation`: frozen BN statistics, no parameter gradient, float32, detached.
    """
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    dtype = compute_dtype(x)
    x0 = x.detach().to(dtype)
    m = None if mask is None else mask.to(dtype)
    if random_start:
        if norm == "linf":
            u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=dtype)
            delta = eps * (2.0 * u - 1.0)
            if m is not None:
                delta = delta * m
        else:
            d = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=dtype)
            radius = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=dtype)
            delta = eps * radius.view(-1, *([1] * (x0.dim() - 1))) * unit(d, m)
    else:
        delta = torch.zeros_like(x0)
    with freezing(owning_module(forward, model)), autocast_off(x):
        for _ in range(steps):
            g = _ce_grad(forward, x0 + delta, y)
            if norm == "l2":
                delta = _project_l2(delta + alpha * unit(g, m), eps)
            else:
                step = g.sign() if m is None else g.sign() * m
                delta = (delta + alpha * step).clamp(-eps, eps)
    return delta.detach().to(x.dtype)


def adversarial_loss(forward: Forward, x: Tensor, y: Tensor, r: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Batch-mean CE(forward(x + r), y) with r detached: the adversarial training loss.

    This is a plain training forward: gradients reach θ (and x) only through forward, and
    BatchNorm running statistics ARE updated as in any training pass. Wrap the call in
    ``frozen_bn_stats(model)`` if the perturbed batch must not leak into them (a method's step does).
    """
    return ce(forward(x + detached(r)), y, label_smoothing)
