"""Per-sample norms and unit vectors (dim 0 is the sample), overflow- and underflow-safe."""
from __future__ import annotations

import torch
from torch import Tensor


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


def gaussian_unit(d: Tensor, mask: Tensor | None) -> Tensor:
    """d / ‖d‖ per sample for d ~ N(0, I) (after masking); an all-masked row stays 0.
    A fresh Gaussian has O(1) entries: plain normalisation, no need for `unit`'s rescaling."""
    if mask is not None:
        d = d * mask
    return d / (per_sample_norm(d) + 1e-12)


def unit_matrix(d: Tensor) -> Tensor:
    """d / ‖d‖_F over the whole tensor (overflow/underflow-safe, as `unit` per sample)."""
    return unit(d.reshape(1, -1)).view_as(d)
