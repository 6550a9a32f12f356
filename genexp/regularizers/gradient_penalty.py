"""Gradient penalties: the consistency penalty of MATH.md §2 and the input/parameter penalties of §5."""
from __future__ import annotations

from typing import Callable, Iterable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.models.batchnorm import batchnorms, freezing, owning_module
from genexp.regularizers.graph import Forward, surrogate
from genexp.regularizers.precision import widen


def _input_leaf(x: Tensor) -> Tensor:
    """The tensor to differentiate against.

    An x that already requires grad (an embedding output) is used as is, so a penalty trained
    with create_graph=True also reaches the parameters that produced x; otherwise a detached
    leaf copy.
    """
    return x if x.requires_grad else x.detach().requires_grad_(True)


def _per_sample_sq(g: Tensor) -> Tensor:
    return g.flatten(1).pow(2).sum(1)


def _weights(probs: Tensor, weighting: str) -> Tensor:
    """λ-style weights w_i of MATH.md §2 (constants: detached)."""
    if weighting == "mse":
        return torch.ones_like(probs)
    if weighting == "kl":
        # 1/f_i with f_i clamped away from an exact 0 (float32 softmax underflow): there
        # ∇f_i underflows too, and w·‖∇f‖² must be 0, not inf·0.
        return 1.0 / probs.detach().clamp_min(torch.finfo(probs.dtype).tiny)
    raise ValueError(f"weighting must be 'mse' or 'kl', got {weighting!r}")


def _has_training_bn(module: nn.Module | None) -> bool:
    return any(m.training for m in batchnorms(module))


def consistency_gradient_penalty(
    forward: Forward,
    x: Tensor,
    *,
    weighting: Literal["mse", "kl"] = "mse",
    estimator: Literal["exact", "rademacher"] = "exact",
    samples: int = 1,
    generator: torch.Generator | None = None,
    create_graph: bool = True,
    model: nn.Module | None = None,
) -> Tensor:
    """Batch mean of Σ_i w_i ‖∇_x f_i(x)‖², f = softmax(forward(x)), per sample.

    ``weighting="mse"``: w_i = 1 (E‖f(x+ε) − f(x)‖² ≈ σ² times this, since λ_i = 2).
    ``weighting="kl"``: w_i = 1/f_i, detached (E KL(f(x)‖f(x+ε)) ≈ ½σ² times this).

    ``estimator="exact"`` builds the full per-sample Jacobian with ``torch.func``
    (``vmap(jacrev(.))``, the model sees a batch of 1 per sample). It therefore needs a
    model without BatchNorm in training mode (eval-mode BN is fine); such a model, when it
    can be found from `forward` or `model`, raises ValueError. Dropout draws a different
    mask per sample.

    ``estimator="rademacher"``: with η_i iid ±1, ‖∇_x Σ_i η_i √w_i f_i‖² has expectation
    exactly Σ_i w_i ‖∇_x f_i‖² (E η_i η_j = δ_ij); averaged over `samples` draws, one
    backward per draw from a single forward. With training-mode BatchNorm the gradient of a
    sample's output also flows into the other samples' inputs through the batch statistics,
    so the value is not a per-sample penalty there.

    ``create_graph=True`` makes the result differentiable w.r.t. θ (train on it);
    ``False`` returns a detached value.
    """
    if samples < 1:
        raise ValueError("samples must be >= 1")
    if estimator == "exact":
        return _exact_gp(forward, x, weighting, create_graph, owning_module(forward, model))
    if estimator != "rademacher":
        raise ValueError(f"estimator must be 'exact' or 'rademacher', got {estimator!r}")

    xg = _input_leaf(x)
    with torch.enable_grad():
        probs = F.softmax(widen(forward(xg)), dim=-1)
        sqrt_w = _weights(probs, weighting).sqrt()
        total = xg.new_zeros(xg.shape[0], dtype=probs.dtype)
        for k in range(samples):
            eta = torch.randint(0, 2, probs.shape, generator=generator, device=probs.device).to(probs.dtype)
            eta = 2.0 * eta - 1.0
            # One forward, one backward per draw: the graph is kept until the last draw.
            (g,) = torch.autograd.grad((eta * sqrt_w * probs).sum(), [xg], create_graph=create_graph,
                                       retain_graph=create_graph or k < samples - 1)
            total = total + _per_sample_sq(widen(g))
        out = (total / samples).mean()
    return out if create_graph else out.detach()


def _exact_gp(forward: Forward, x: Tensor, weighting: str, create_graph: bool,
              module: nn.Module | None) -> Tensor:
    if _has_training_bn(module):
        raise ValueError("the exact consistency gradient penalty evaluates the model one sample at a "
                         "time and cannot use training-mode BatchNorm: put BN in eval mode or use "
                         "estimator='rademacher'")

    def probs_one(xi: Tensor) -> tuple[Tensor, Tensor]:
        p = F.softmax(widen(forward(xi.unsqueeze(0))), dim=-1).squeeze(0)
        return p, p

    per_sample = torch.func.vmap(torch.func.jacrev(probs_one, has_aux=True), randomness="different")
    # torch.func ignores an outer no_grad for its own derivatives, so no_grad here only stops
    # the graph back to θ from being built when nobody will train on the value.
    with torch.enable_grad() if create_graph else torch.no_grad():
        jac, probs = per_sample(x if create_graph else x.detach())  # jac: (B, C, *x.shape[1:])
        w = _weights(probs, weighting)
        sq = jac.flatten(2).pow(2).sum(2)  # (B, C): ‖∇_x f_i‖² per sample and class
        return (w * sq).sum(1).mean()


def input_gradient_penalty(forward: Forward, x: Tensor, y: Tensor, *, create_graph: bool = True) -> Tensor:
    """Batch mean of ‖∇_x CE(forward(x)_b, y_b)‖² (per-sample loss gradients).

    The SUM of per-sample losses is differentiated so each sample's gradient is that of its
    own loss, independent of batch size (a mean would scale every gradient by 1/B).
    ``create_graph=False`` returns a detached value.
    """
    xg = _input_leaf(x)
    with torch.enable_grad():
        loss = F.cross_entropy(widen(forward(xg)), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, [xg], create_graph=create_graph)
        out = _per_sample_sq(widen(g)).mean()
    return out if create_graph else out.detach()


def param_gradient_penalty(
    loss: Tensor,
    params: Iterable[Tensor],
    *,
    method: Literal["double_backward", "finite_difference"] = "double_backward",
    closure: Callable[[], Tensor] | None = None,
    h: float = 1e-3,
    model: nn.Module | None = None,
) -> Tensor:
    """‖∇_θ loss‖² over `params`, differentiable w.r.t. θ (MATH.md §5; Barrett & Dherin 2021).

    ``method="double_backward"``: g = autograd.grad(loss, θ, create_graph=True); returns
    Σ‖g‖², whose θ-gradient autograd computes exactly (2 H g) by double backward.

    ``method="finite_difference"`` avoids double backward. Its θ-gradient
    2 H g is approximated by 2 (∇l(θ + h·g/‖g‖) − ∇l(θ)) · ‖g‖/h, an error O(h) relative,
    and deposited by the returned tensor's backward. ``closure()`` must recompute the same
    scalar loss from the current parameter values (same batch, same dropout masks: run it
    deterministically); it is called once, with θ shifted in place, and θ is then restored
    bit-exactly. The shift goes through ``.data`` so the graph of `loss` (which the caller
    still backpropagates for the main objective: this function retains it) stays valid.
    BatchNorm running statistics of `model`, if given, are frozen here for the closure; a caller
    that froze them itself (a method's step) passes no `model`.
    The returned value is ‖g‖² exactly; its gradient flows to `params` only.
    ``h`` is the length of the step in parameter space.
    """
    params = [p for p in params]
    if method == "double_backward":
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        return sum((g.pow(2).sum() for g in grads if g is not None), loss.new_zeros(()))
    if method != "finite_difference":
        raise ValueError(f"method must be 'double_backward' or 'finite_difference', got {method!r}")
    if closure is None:
        raise ValueError("method='finite_difference' needs a closure that recomputes the loss")

    grads = _grads_or_zeros(loss, params, retain_graph=True)
    value = sum(g.pow(2).sum() for g in grads)
    gnorm = value.sqrt()
    if gnorm.item() == 0.0:
        # H·0 = 0: the penalty has zero gradient; keep a graph so backward() still works.
        return value + sum((p * 0).sum() for p in params)

    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.data.add_(g, alpha=h / gnorm.item())
        with torch.enable_grad(), freezing(model):
            shifted = _grads_or_zeros(closure(), params, retain_graph=False)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.data.copy_(s)
    scale = 2.0 * gnorm.item() / h
    return surrogate(value, params, [(gs - g) * scale for gs, g in zip(shifted, grads)])


def _grads_or_zeros(loss: Tensor, params: list[Tensor], *, retain_graph: bool) -> list[Tensor]:
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]
