"""Random-noise regularizers (MATH.md §1) and the noise-consistency target (§2).

Noise can go on the input (:func:`add_noise`, :func:`noisy_ce`), hidden activations
(:func:`hidden_noise`), weights (:func:`weight_noise`) or labels (:func:`smooth_labels`);
additive Gaussian or multiplicative (Bernoulli dropout-style, or U[0,1]·2).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.models.batchnorm import freezing, owning_module
from genexp.regularizers.consistency import softmax_mse
from genexp.regularizers.divergence import ce, kl_from_logits
from genexp.regularizers.graph import Forward, detached, surrogate
from genexp.regularizers.tiling import repeat_batch

NoiseKind = Literal["gaussian", "bernoulli", "uniform"]

DEFAULT_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Sigmoid,
)


def add_noise(
    x: Tensor,
    *,
    kind: NoiseKind = "gaussian",
    sigma: float | None = None,
    p: float | None = None,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x with random noise, differentiable w.r.t. x.

    ``"gaussian"``: x + sigma·ε, ε ~ N(0, I).
    ``"bernoulli"``: x·b/p, b ~ Bernoulli(p), p = keep probability (inverted dropout: mean x).
    ``"uniform"``: x·2u, u ~ U[0, 1] (mean x, multiplier variance 1/3).
    `mask` (broadcastable to x, 1 = real position) leaves masked-out positions untouched.
    """
    dtype = x.dtype if x.is_floating_point() else torch.float32
    if kind == "gaussian":
        if sigma is None:
            raise ValueError("kind='gaussian' needs sigma")
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=dtype) * sigma
        return x + (eps if mask is None else eps * mask)
    if kind == "bernoulli":
        if p is None or not 0.0 < p <= 1.0:
            raise ValueError(f"kind='bernoulli' needs a keep probability 0 < p <= 1, got {p!r}")
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=dtype)
        factor = (u < p).to(dtype) / p
    elif kind == "uniform":
        factor = 2.0 * torch.rand(x.shape, generator=generator, device=x.device, dtype=dtype)
    else:
        raise ValueError(f"kind must be 'gaussian', 'bernoulli' or 'uniform', got {kind!r}")
    if mask is not None:
        factor = torch.where(mask.bool(), factor, torch.ones_like(factor))
    return x * factor


@contextlib.contextmanager
def weight_noise(
    model: nn.Module,
    sigma: float,
    *,
    params: Iterable[nn.Parameter] | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[None]:
    """Inside the block the parameters are θ + sigma·ε (ε ~ N(0, I)); on exit exactly θ again.

    `params` defaults to every parameter of `model` that requires grad (weights and biases).
    Forward AND backward belong inside the block: gradients are then taken at the noisy
    point, which is the gradient of the noise objective E_ε l(θ + ε). The optimizer step
    belongs after the block (restoring θ would overwrite an update made inside it). The
    noise and the restore are in-place ops seen by autograd, so a backward through a noisy
    forward started after the block raises instead of silently using the clean weights.
    """
    chosen = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    saved = [p.detach().clone() for p in chosen]
    try:
        with torch.no_grad():
            for p in chosen:
                p.add_(torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype), alpha=sigma)
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(chosen, saved):
                p.copy_(s)


def weight_noise_loss(model: nn.Module, loss_fn: Callable[[], tuple[Tensor, Tensor]], sigma: float, *,
                      samples: int = 1, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(1/k) Σ_{j≤k} l(θ + σ·ε_j) with its θ-gradient taken at the noisy points, as a scalar whose
    backward() (called later, θ restored) deposits that gradient; and the first draw's logits.

    `loss_fn()` runs the forward at the current weights and returns (loss, logits).
    """
    params: list[nn.Parameter] = [p for p in model.parameters() if p.requires_grad]
    total, grads, first = 0.0, [torch.zeros_like(p) for p in params], None
    for _ in range(samples):
        with weight_noise(model, sigma, params=params, generator=generator):
            loss, logits = loss_fn()
            gs = torch.autograd.grad(loss, params, allow_unused=True)
        for acc, g in zip(grads, gs):
            if g is not None:
                acc.add_(g, alpha=1.0 / samples)
        total = total + loss.detach() / samples
        first = logits.detach() if first is None else first
    return surrogate(total, params, grads), first


@contextlib.contextmanager
def hidden_noise(
    model: nn.Module,
    sigma: float,
    module_types: tuple[type[nn.Module], ...] = DEFAULT_ACTIVATIONS,
    *,
    generator: torch.Generator | None = None,
) -> Iterator[None]:
    """Inside the block, every submodule of `module_types` outputs h + sigma·ε, ε ~ N(0, I).

    Implemented with forward hooks, removed on exit. Activations applied functionally
    (``F.relu`` inside a forward) are not modules and get no noise.
    """

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor | None:
        if not isinstance(output, Tensor) or not output.is_floating_point():
            return None
        noise = torch.randn(output.shape, generator=generator, device=output.device, dtype=output.dtype)
        return output + sigma * noise

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, module_types)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def smooth_labels(y: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """Soft targets (1 − s)·onehot(y) + s/C, float32, shape (*y.shape, C).

    This is the expected target of label noise that replaces a label, with probability s,
    by a uniformly drawn class (which may be the true one), so CE against it equals the
    label-noise objective in expectation.
    """
    onehot = F.one_hot(y.long(), num_classes).float()
    return (1.0 - smoothing) * onehot + smoothing / num_classes


def noisy_logits(
    forward: Forward,
    x: Tensor,
    *,
    sigma: float | None = None,
    samples: int = 1,
    kind: NoiseKind = "gaussian",
    p: float | None = None,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """forward(noise(x)) on `samples` stacked copies of the batch (k·B rows, copy j first at row j·B)."""
    if samples < 1:
        raise ValueError("samples must be >= 1")
    b = x.shape[0]
    xs = repeat_batch(x, samples, b)
    ms = repeat_batch(mask, samples, b)
    return forward(add_noise(xs, kind=kind, sigma=sigma, p=p, mask=ms, generator=generator))


def noisy_ce(forward: Forward, x: Tensor, y: Tensor, *, label_smoothing: float = 0.0, samples: int = 1,
             **noise: Any) -> Tensor:
    """(1/k) Σ_{j≤k} batch-mean CE(forward(noise_j(x)), y): k = `samples` noise draws per example.

    The k copies go through one forward of a k×B batch (k× the cost, a lower-variance
    estimate of E_ε l(f(x+ε), y)). `noise`: the keywords of :func:`noisy_logits` (sigma, kind,
    p, mask, generator). A training forward: BatchNorm statistics are updated, from the noisy
    k×B batch.
    """
    logits = noisy_logits(forward, x, samples=samples, **noise)
    return ce(logits, repeat_batch(y, samples, x.shape[0]), label_smoothing)


def noise_consistency_loss(
    forward: Forward,
    x: Tensor,
    *,
    sigma: float,
    samples: int = 1,
    consistency: Literal["mse", "kl"] = "mse",
    target_logits: Tensor | None = None,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
    model: nn.Module | None = None,
) -> Tensor:
    """Label-free consistency l(f(x + ε), f_ng(x)), f = softmax, ε ~ N(0, σ²I), averaged over
    `samples` draws and the batch (MATH.md §2).

    ``"mse"``: Σ_i (F_i − f_i)² per sample (summed over classes) — E ≈ σ² Σ_i ‖∇_x f_i‖².
    ``"kl"``: KL(f(x) ‖ f(x+ε)) — E ≈ ½σ² Σ_i ‖∇_x f_i‖²/f_i.
    The target f(x) is detached (pass `target_logits` from a clean forward you already
    made). BatchNorm: the caller freezes the statistics (a method's step does); called on its own
    with `model` (or a module as `forward`) it freezes that module itself.
    """
    if consistency not in ("mse", "kl"):
        raise ValueError(f"consistency must be 'mse' or 'kl', got {consistency!r}")
    if samples < 1:
        raise ValueError("samples must be >= 1")
    with freezing(owning_module(forward, model)):
        if target_logits is None:
            with torch.no_grad():
                target_logits = forward(x.detach())
        logits = noisy_logits(forward, x, sigma=sigma, samples=samples, mask=mask, generator=generator)
    target = repeat_batch(detached(target_logits), samples, x.shape[0])
    if consistency == "kl":
        return kl_from_logits(target, logits)
    return softmax_mse(logits, target)
