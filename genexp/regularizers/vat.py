"""Virtual adversarial training (Miyato et al. 2018), per sample, as in MATH.md §4.

One VAT step, as `genexp.methods.vat.VAT` runs it, in the order of this file:

  1. target = KLTarget(f(x))                 the clean prediction p(x), once per step
  2. d = vat_direction(f, x, target=target)  power iteration: d ← ∇_d KL(p(x) ‖ p(x + ξd)), unit per sample
  3. x_adv = perturbed(x, d, eps)            r_adv = eps·d
  4. target.kl(f(x_adv))                     the VAT term: batch mean of KL(p(x) ‖ p(x + r_adv))

`vat_perturbation` (r_adv) and `vat_loss` (the VAT term) are these same steps for a caller
without a method: they also make the clean pass and freeze BatchNorm. `matrix_vat_perturbation`
is bert4keras's batch-level variant on an embedding matrix.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.errors import GenexpError
from genexp.models.batchnorm import freezing, owning_module
from genexp.regularizers.divergence import kl_from_logits
from genexp.regularizers.graph import Forward, detached
from genexp.regularizers.norms import gaussian_unit, per_sample_norm, unit, unit_matrix
from genexp.regularizers.precision import autocast_off, compute_dtype, full_precision, resolution, widen
from genexp.regularizers.rng_replay import RngReplay

Xi = float | str


class KLTarget:
    """Step 1: the clean prediction p(x) that VAT's KL is measured against, as log-probabilities
    and probabilities computed once per step (the power iteration and step 4's `kl` use them)."""

    def __init__(self, logits: Tensor, dtype: torch.dtype | None = None) -> None:
        logits = detached(logits)
        self.logp = F.log_softmax(logits.to(dtype or compute_dtype(logits)), dim=-1)
        self.p = self.logp.exp()

    def kl(self, logits: Tensor) -> Tensor:
        """Step 4: batch mean of KL(p ‖ softmax(logits)); the same arithmetic as `kl_from_logits`."""
        logq = F.log_softmax(widen(logits), dim=-1)
        return (self.p * (self.logp - logq)).sum() / (logq.numel() // logq.shape[-1])


def vat_direction(forward: Forward, x: Tensor, *, xi: Xi, power_iters: int, target: KLTarget,
                  generator: torch.Generator | None = None, mask: Tensor | None = None, init: Tensor | None = None,
                  replay: RngReplay | None = None, noise: Tensor | None = None) -> Tensor:
    """Step 2: r_adv's direction, a unit vector per sample (float32 or wider), by `power_iters`
    steps of d ← ∇_d KL(p(x) ‖ p(x + ξd)) from d ~ N(0, I) (or from `init`, a warm start).

    `target` holds p(x) from the clean pass, `replay` the random state captured before that pass
    (each probe pass then draws the same dropout masks and noise). `mask` (1 = may be perturbed)
    keeps padding out of d. Each probe differentiates w.r.t. the perturbation only: no parameter
    gradient is built or touched. Runs with autocast and TF32 off (`full_precision`). The caller
    freezes BatchNorm statistics (a method's step does; `vat_perturbation` does on its own).
    `noise`: the N(0, I) start already drawn (`gaussian_start`), as a compiled step passes it in;
    otherwise it is drawn here from `generator`."""
    dtype = compute_dtype(x)
    x0 = detached(x).to(dtype)
    if init is None:
        d = gaussian_start(x0, generator) if noise is None else noise
    else:
        d = detached(init).to(dtype)
    if power_iters <= 0:
        return unit(d, mask)
    reduced = torch.is_autocast_enabled(x.device.type)
    with full_precision(x):
        if reduced:
            # The caller's p(x) came from an autocast (bf16) pass: against it, f(x + ξd) − f(x)
            # would be bf16 rounding (~1e-2), not ξ·Hd. Both sides of the difference need float32.
            with torch.no_grad(), replaying(replay):
                target = KLTarget(forward(x0), dtype)
        step = finite_difference_step(xi, x0, mask)
        d = gaussian_unit(d, mask) if init is None else unit(d, mask)
        for _ in range(power_iters):
            with replaying(replay):
                grad = kl_input_gradient(forward, x0, step * d, target, dtype)
            d = unit(grad, mask, previous=d)
    return d


def gaussian_start(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The power iteration's random start d ~ N(0, I), shaped like x, in its compute dtype."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=compute_dtype(x))


def kl_input_gradient(forward: Forward, x0: Tensor, probe: Tensor, target: KLTarget, dtype: torch.dtype) -> Tensor:
    """∇_probe Σ_samples KL(p ‖ softmax(forward(x0 + probe))) = Jᵀ(q − p): the KL's own gradient
    w.r.t. the logits, fed straight into the backward (fewer ops than differentiating the KL).
    Summed, not averaged: each sample's gradient is independent of the batch size. Only the probe
    is differentiated (no weight gradient). Under torch.compile the same product is a
    torch.func.vjp, which traces into the step's graph where autograd.grad would break it."""
    if torch.compiler.is_compiling():
        logits, pull = torch.func.vjp(lambda p: forward(x0 + p).to(dtype), probe)
        return pull(F.softmax(logits.detach(), dim=-1) - target.p)[0].detach()  # as autograd.grad: no graph
    probe = probe.requires_grad_(True)
    logits = forward(x0 + probe).to(dtype)
    (grad,) = torch.autograd.grad(logits, [probe], grad_outputs=F.softmax(logits.detach(), dim=-1) - target.p)
    return grad


def finite_difference_step(xi: Xi, x: Tensor, mask: Tensor | None = None) -> float | Tensor:
    """ξ of the power iteration; `xi="auto"` gives √(machine ε)·‖x‖ per sample.

    The finite difference f(x + ξd) − f(x) loses ξd entirely once ξd is below the resolution of x:
    with Miyato's ξ = 1e-6 in float32 the 'dominant direction' is rounding noise (cosine ≈ 0
    with the float64 one on digits and on a WRN; tests/regularizers/test_regularizers.py). √ε·‖x‖ is the
    textbook step that balances truncation and rounding error (≈ 3.5e-4·‖x‖ in float32, 0.03·‖x‖
    where CUDA runs float32 on TF32 tensor cores).
    """
    if check_xi(xi) == "auto":
        norm = per_sample_norm(x if mask is None else x * mask)
        return math.sqrt(resolution(x)) * (norm + (norm == 0))  # an all-zero sample gets ‖x‖ := 1
    return float(xi)


def check_xi(xi: Xi) -> Xi:
    """`xi` itself if it is "auto" or a non-negative number; else a one-line GenexpError."""
    if xi == "auto":
        return xi
    if isinstance(xi, bool) or not isinstance(xi, (int, float)):
        raise GenexpError(f"method.xi={xi!r} is not a number: set method.xi=auto or e.g. method.xi=1e-3")
    if xi < 0:
        raise GenexpError(f"method.xi={xi} must be >= 0: set method.xi=auto or a non-negative number")
    return xi


def replaying(replay: RngReplay | None) -> contextlib.AbstractContextManager:
    """`replay.replay()`, or nothing when there is no random state to replay."""
    return contextlib.nullcontext() if replay is None else replay.replay()


def perturbed(x: Tensor, direction: Tensor, eps: float) -> Tensor:
    """Step 3: x + eps·direction in x's dtype, one op; the direction carries no gradient."""
    return torch.add(x, direction.to(x.dtype), alpha=eps)


# ---- the same steps for a caller without a method ------------------------------------------

def clean_target(forward: Forward, x: Tensor, target_logits: Tensor | None,
                 replay: RngReplay | None) -> tuple[KLTarget, RngReplay | None]:
    """Step 1 for `vat_perturbation` and `vat_loss`: p(x) from `target_logits` (a clean pass the
    caller made, `replay` captured before it), or from a clean pass made here, in float32 without
    autocast or TF32, with the random state captured before it (as `method.shared_noise=true`)."""
    if target_logits is None:
        replay = RngReplay(x.device)
        with torch.no_grad(), full_precision(x):
            target_logits = forward(detached(x).to(compute_dtype(x)))
    return KLTarget(target_logits, compute_dtype(x)), replay


def vat_perturbation(forward: Forward, x: Tensor, *, xi: Xi, eps: float, power_iters: int = 1,
                     generator: torch.Generator | None = None, target_logits: Tensor | None = None,
                     mask: Tensor | None = None, init: Tensor | None = None, model: nn.Module | None = None,
                     replay: RngReplay | None = None) -> Tensor:
    """r_adv = eps·`vat_direction` (steps 1-2), ‖r_adv‖₂ = eps for every sample, in x's dtype.

    `power_iters=0` returns a random Gaussian direction scaled to eps. `init` starts the power
    iteration from a given direction instead of N(0, I) (warm start). `xi="auto"` picks the
    finite-difference step from the precision and scale of x (`finite_difference_step`).
    BatchNorm: called with `model` (or a module as `forward`) it freezes that module's statistics.
    """
    with freezing(owning_module(forward, model)):
        target = None
        if power_iters > 0:
            target, replay = clean_target(forward, x, target_logits, replay)
        d = vat_direction(forward, x, xi=xi, power_iters=power_iters, target=target, generator=generator,
                          mask=mask, init=init, replay=replay)
    return (eps * d).to(x.dtype)


def vat_loss(forward: Forward, x: Tensor, *, xi: Xi, eps: float, power_iters: int = 1,
             target_logits: Tensor | None = None, generator: torch.Generator | None = None,
             mask: Tensor | None = None, model: nn.Module | None = None, r_adv: Tensor | None = None,
             replay: RngReplay | None = None) -> Tensor:
    """The VAT term (steps 1-4): batch mean of KL(p(x) ‖ p(x + r_adv)); gradients reach θ (and x)
    only through p(x + r_adv).

    Pass `target_logits` from a clean forward you already made to avoid a second one (with
    `replay` captured before it, when its random draws are to be replayed), and `r_adv` when the
    perturbation is already computed. BatchNorm: as `vat_perturbation`.
    """
    with freezing(owning_module(forward, model)):
        target, replay = clean_target(forward, x, target_logits, replay)
        if r_adv is None:
            d = vat_direction(forward, x, xi=xi, power_iters=power_iters, target=target, generator=generator,
                              mask=mask, replay=replay)
            x_adv = perturbed(x, d, eps)
        else:
            x_adv = perturbed(x, detached(r_adv), 1.0)
        return target.kl(forward(x_adv))


# ---- bert4keras's variant: one perturbation of the embedding matrix ---------------------------

def matrix_vat_perturbation(logits_at: Callable[[Tensor], Tensor], w: Tensor, *, target_logits: Tensor, xi: float,
                            eps: float, power_iters: int, generator: torch.Generator | None = None) -> Tensor:
    """bert4keras's VAT (MATH.md §4): one batch-level r shaped like the matrix W, ‖r‖_F = eps.

      d ~ N(0, I);  repeat power_iters times:  d ← ∇_d Σ_b KL(p_b ‖ softmax(logits_at(W + ξ·d/‖d‖_F))_b)
      r = eps · d/‖d‖_F

    `logits_at(M)` is the batch's logits with W replaced by M; W is held constant and only d is
    differentiated (no parameter gradient). In float32 (or wider) with autocast off. The caller
    freezes BatchNorm statistics.
    """
    w = detached(w)
    dtype = compute_dtype(w)
    d = torch.randn(w.shape, generator=generator, device=w.device, dtype=dtype)
    reduced = torch.is_autocast_enabled(w.device.type)
    with autocast_off(w):
        if reduced:  # as in vat_direction: the finite difference needs a float32 p(x), not the autocast one
            with torch.no_grad():
                target_logits = logits_at(w)
        target = detached(target_logits).to(dtype)
        for _ in range(power_iters):
            prev = unit_matrix(d)
            d = (xi * prev).requires_grad_(True)
            logits = logits_at((w.to(dtype) + d).to(w.dtype))
            (grad,) = torch.autograd.grad(kl_from_logits(target, logits, reduction="sum"), [d])
            # Logits that did not move (ξ below resolution): keep the previous direction.
            d = prev if grad.abs().amax() == 0 else grad
    return (eps * unit_matrix(d)).to(w.dtype)
