"""Arithmetic precision: the float type regularizers compute in, and switching autocast and TF32 off.

Finite differences and power iterations lose their signal in bf16 or TF32 (MATH.md §4, the
choice of ξ): these helpers keep them in float32 (or wider) whatever the training step runs in.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    """float32 unless the input is already wider: finite differences with ξ ~ 1e-6 underflow in bf16."""
    if x.dtype == torch.float32 or x.dtype == torch.float64:
        return x.dtype
    return torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32


def widen(t: Tensor) -> Tensor:
    """t in float32, or unchanged when already wider (float64 checks must stay float64)."""
    if t.dtype == torch.float32 or t.dtype == torch.float64:
        return t
    return t.to(compute_dtype(t))


def resolution(x: Tensor) -> float:
    """Relative precision of the arithmetic a forward pass on x gets (autocast off)."""
    if x.dtype == torch.float32 and x.is_cuda and (
            torch.backends.cudnn.allow_tf32 or torch.get_float32_matmul_precision() != "highest"):
        return 2.0 ** -10  # TF32 tensor cores keep 10 mantissa bits (cuDNN convolutions use them by default)
    return torch.finfo(x.dtype).eps


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
