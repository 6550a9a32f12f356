"""Virtual adversarial training (Miyato et al. 2018), per sample, as in MATH.md §4."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from genexp.regularizers._common import (
    Forward,
    autocast_off,
    compute_dtype,
    frozen_bn_stats,
    kl_from_logits,
    owning_module,
    unit,
)


def vat_perturbation(
    forward: Forward,
    x: Tensor,
    *,
    xi: float,
    eps: float,
    power_iters: int = 1,
    generator: torch.Generator | None = None,
    target_logits: Tensor | None = None,
    mask: Tensor | None = None,
    init: Tensor | None = None,
    model: nn.Module | None = None,
) -> Tensor:
    """r_adv with ‖r_adv‖₂ = eps for every sample, the dominant direction of KL(p(x)‖p(x+r)).

    `power_iters=0` returns a random Gaussian direction scaled to eps. `mask` (broadcastable
    to x, 1 = real token) keeps padding unperturbed and out of the norm. `init` starts the
    power iteration from a given direction instead of N(0, I) (warm start). Each power step
    differentiates w.r.t. the perturbation only, so no parameter gradient is built or touched,
    and BatchNorm running statistics of `model` (or of `forward` when it is a module) are
    left unchanged. Runs in float32 (or wider) with autocast disabled.
    """
    dtype = compute_dtype(x)
    x0 = x.detach().to(dtype)
    if init is None:
        d = torch.randn(x0.shape, generator=generator, device=x.device, dtype=dtype)
    else:
        d = init.detach().to(dtype)
    if power_iters <= 0:
        return (eps * unit(d, mask)).to(x.dtype)
    with frozen_bn_stats(owning_module(forward, model)), autocast_off(x):
        if target_logits is None:
            with torch.no_grad():
                target_logits = forward(x0)
        target = target_logits.detach().to(dtype)
        for _ in range(power_iters):
            prev = unit(d, mask)
            d = (xi * prev).requires_grad_(True)
            # Summed, not averaged, KL: each sample's gradient is independent of batch size.
            dist = kl_from_logits(target, forward(x0 + d), reduction="sum")
            (grad,) = torch.autograd.grad(dist, [d])
            # A sample whose logits did not move at x + ξd (ξ below float resolution, or a flat
            # region) has a zero gradient: keep its previous direction rather than return r = 0.
            dead = grad.flatten(1).abs().amax(dim=1) == 0
            d = torch.where(dead.view(-1, *([1] * (grad.dim() - 1))), prev, grad)
    return (eps * unit(d, mask)).to(x.dtype)


def vat_loss(
    forward: Forward,
    x: Tensor,
    *,
    xi: float,
    eps: float,
    power_iters: int = 1,
    target_logits: Tensor | None = None,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
    model: nn.Module | None = None,
    r_adv: Tensor | None = None,
) -> Tensor:
    """Batch mean of KL(p(x) ‖ p(x + r_adv)); gradients reach θ (and x) only through p(x + r_adv).

    Pass `target_logits` from a clean forward you already made to avoid a second one.
    """
    module = owning_module(forward, model)
    if target_logits is None:
        with torch.no_grad(), frozen_bn_stats(module):
            target_logits = forward(x.detach())
    target_logits = target_logits.detach()
    if r_adv is None:
        r_adv = vat_perturbation(forward, x, xi=xi, eps=eps, power_iters=power_iters, generator=generator,
                                 target_logits=target_logits, mask=mask, model=module)
    with frozen_bn_stats(module):
        logits_adv = forward(x + r_adv.detach())
    return kl_from_logits(target_logits, logits_adv)
