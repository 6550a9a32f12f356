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
    return torch.linalg.vector_norm(v.flatten(1), dim=1).view(-1, *([1] * (v.dim() - 1)))


def unit(v: Tensor, mask: Tensor | None = None, previous: Tensor | None = None) -> Tensor:
    """v / ‖v‖ per sample, after zeroing masked-out positions (padding tokens).

    Dividing by the per-sample max first keeps the squared sum inside float range even when v
    is a power-iteration gradient of ~1e-20 (tiny ξ) or a huge one. A sample with v = 0 comes back
    as 0, or as its row of `previous` when given (a flat region, or ξd below float resolution:
    the power iteration keeps its last direction instead of returning r = 0).
    """
    if mask is not None:
        v = v * mask
    flat = v.flatten(1)
    scale = flat.abs().amax(dim=1, keepdim=True)  # a 5× cheaper kernel than vector_norm(ord=inf) on CPU
    if previous is None:
        flat = flat / scale.clamp_min(1e-30)
        # After the max-scaling a non-zero row has norm >= 1: the ε only keeps a zero row at 0.
        return (flat / (torch.linalg.vector_norm(flat, dim=1, keepdim=True) + 1e-12)).view_as(v)
    # Zero rows become 0/0 here and are replaced by `previous`; the others are as above.
    flat = flat / scale
    flat = flat / torch.linalg.vector_norm(flat, dim=1, keepdim=True)
    return torch.where(scale > 0, flat, previous.flatten(1)).view_as(v)


def repeat_batch(t: Tensor | None, k: int, batch: int | None = None) -> Tensor | None:
    """k copies of a batch stacked along dim 0 (copy j is rows j·B … (j+1)·B − 1).

    With `batch`, only a tensor whose dim 0 is that batch size is tiled: a broadcastable mask
    (dim 0 of size 1) or a scalar stays as is.
    """
    if t is None or k == 1 or t.dim() == 0 or (batch is not None and t.shape[0] != batch):
        return t
    return t.repeat(k, *([1] * (t.dim() - 1)))


def ce(logits: Tensor, y: Tensor, label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    """Cross-entropy in float32 (or wider)."""
    return F.cross_entropy(widen(logits), y, label_smoothing=label_smoothing, reduction=reduction)


def compute_dtype(x: Tensor) -> torch.dtype:
    """float32 unless the input is already wider: finite differences with ξ ~ 1e-6 underflow in bf16."""
    if x.dtype == torch.float32 or x.dtype == torch.float64:
        return x.dtype
    return torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32


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


_BN_CACHE: weakref.WeakKeyDictionary[nn.Module, list[nn.modules.batchnorm._BatchNorm]] = weakref.WeakKeyDictionary()


def batchnorms(module: nn.Module | None) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `module`, cached (a WRN has ~100 modules and every step asks).
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
def frozen_bn_stats(*modules: nn.Module | None) -> Iterator[None]:
    """BatchNorm keeps normalising with batch statistics but its running buffers are not updated.

    This is the `update_batch_stats=False` of Miyato et al.'s code: perturbed passes must not
    leak adversarial statistics into evaluation. Inside the block every training-mode BatchNorm
    of `modules` runs with `track_running_stats` off, so its forward neither reads nor writes the
    running buffers or the batch counter (no buffer copies, nothing to restore but a flag).
    Nested entries find nothing left to freeze and cost nothing.

    Where it is entered: `Method.loss` enters it once per training step, around everything but
    the supervised pass (genexp.methods.base). Regularizer functions do not enter it for the
    module their caller names as frozen; called on their own with `model` (or a module as
    `forward`), they freeze it themselves.
    """
    bns = [m for module in modules for m in batchnorms(module) if m.training and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


def freezing(module: nn.Module | None) -> contextlib.AbstractContextManager:
    """`frozen_bn_stats(module)` for a regularizer called on its own with a module; nothing when the
    caller (a method's step) froze the statistics and passed no module."""
    return contextlib.nullcontext() if module is None else frozen_bn_stats(module)


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

    A finite difference at ξ ≈ 3.5e-4·‖x‖ needs them: TF32 keeps 10 mantissa bits, so cuDNN's
    default TF32 convolutions turn part of f(x + ξd) − f(x) into rounding and the power iteration
    drifts from the float64 direction (scripts/xi_precision.py compares the two).
    """
    if x.device.type != "cuda":
        if torch.is_autocast_enabled(x.device.type):
            with autocast_off(x):
                yield
        else:  # nothing to switch off: no context to enter
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
    if t.dtype == torch.float32 or t.dtype == torch.float64:
        return t
    return t.to(compute_dtype(t))
