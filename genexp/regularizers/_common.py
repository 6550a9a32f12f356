"""Pieces every regularizer shares: per-sample norms, masks, frozen BatchNorm statistics."""
from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Forward = Callable[[Tensor], Tensor]


def per_sample_norm(v: Tensor) -> Tensor:
    """L2 norm of each sample (dim 0), shaped to broadcast against `v`."""
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def unit(v: Tensor, mask: Tensor | None = None) -> Tensor:
    """v / ‖v‖ per sample, after zeroing masked-out positions (padding tokens).

    Scaling by the per-sample max first keeps the squared sum inside float range even when
    the power-iteration gradient is ~1e-20 (tiny ξ) or huge.
    """
    if mask is not None:
        v = v * mask
    flat = v.flatten(1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-30).view(-1, *([1] * (v.dim() - 1)))
    v = v / scale
    return v / (per_sample_norm(v) + 1e-12)


def compute_dtype(x: Tensor) -> torch.dtype:
    """float32 unless the input is already wider: finite differences with ξ ~ 1e-6 underflow in bf16."""
    return torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32


def kl_from_logits(target_logits: Tensor, logits: Tensor, reduction: str = "mean") -> Tensor:
    """KL(p_target ‖ p) per sample, summed over classes. The target is used as given (detach it)."""
    logp_t = F.log_softmax(widen(target_logits), dim=-1)
    logq = F.log_softmax(widen(logits), dim=-1)
    # One fused op (and one backward node) instead of exp, sub, mul, sum: the loss sits on every step.
    if reduction == "none":
        return F.kl_div(logq, logp_t, reduction="none", log_target=True).sum(-1)
    kl = F.kl_div(logq, logp_t, reduction="sum", log_target=True)
    return kl if reduction == "sum" else kl / (logq.numel() // logq.shape[-1])  # mean over samples


_BN_CACHE: weakref.WeakKeyDictionary[nn.Module, list[nn.modules.batchnorm._BatchNorm]] = weakref.WeakKeyDictionary()


def batchnorms(module: nn.Module | None) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `module`, cached: a VAT step asks ~4 times and a WRN has ~100 modules.
    A model's layers are fixed once built, so the cache is keyed on the module object."""
    if module is None:
        return []
    bns = _BN_CACHE.get(module)
    if bns is None:
        bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        _BN_CACHE[module] = bns
    return bns


def couples_batch(module: nn.Module) -> bool:
    """True when a sample's output depends on the rest of its batch (BatchNorm on batch statistics).

    Only then must differently-perturbed inputs go through separate forward passes; otherwise they
    can share one larger pass, which gives the same outputs and gradients with fewer kernel calls.
    """
    return any(m.training or m.running_mean is None for m in batchnorms(module))


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module | None) -> Iterator[None]:
    """BatchNorm keeps normalising with batch statistics but its running buffers are not updated.

    This is the `update_batch_stats=False` of Miyato et al.'s code: perturbed passes must not
    leak adversarial statistics into evaluation.
    """
    bns = [m for m in batchnorms(module) if m.training and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in bns]
    for m in bns:
        # momentum 0 keeps running_mean/var fixed in-place: no buffer copies on the hot path.
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, nbt) in zip(bns, saved):
            m.momentum = momentum
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)


def owning_module(forward: Forward, model: nn.Module | None) -> nn.Module | None:
    """The module whose BatchNorm buffers to protect: explicit `model`, or `forward` itself."""
    if model is not None:
        return model
    if isinstance(forward, nn.Module):
        return forward
    owner = getattr(forward, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


@contextlib.contextmanager
def autocast_off(x: Tensor) -> Iterator[None]:
    with torch.autocast(device_type=x.device.type, enabled=False):
        yield


@contextlib.contextmanager
def full_precision(x: Tensor) -> Iterator[None]:
    """Autocast off and, on CUDA, no TF32: float32 arithmetic with its 23 mantissa bits.

    A finite difference at ξ ≈ 3.5e-4·‖x‖ needs them: with cuDNN's default TF32 convolutions the
    VAT direction of a WRN on an H100 had mean cosine 0.91 (min 0.37) with the float64 one, 0.999
    without (scripts/xi_precision.py).
    """
    if x.device.type != "cuda":
        if torch.is_autocast_enabled(x.device.type):
            with autocast_off(x):
                yield
        else:  # nothing to switch off: skip the context's per-call cost on tiny CPU models
            yield
        return
    matmul = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        with autocast_off(x), torch.backends.cudnn.flags(
                enabled=torch.backends.cudnn.enabled, benchmark=torch.backends.cudnn.benchmark,
                deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
            yield
    finally:
        torch.set_float32_matmul_precision(matmul)


def widen(t: Tensor) -> Tensor:
    """t in float32, or unchanged when already wider (float64 checks must stay float64)."""
    return t.to(compute_dtype(t))
