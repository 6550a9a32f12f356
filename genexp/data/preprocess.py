"""On-device `preprocess` callables: stored (often uint8) batches -> normalised float.

Datasets keep images in their compact stored form (uint8) on the training device; these run on
every batch. Their constants are fitted on the training split only and moved to the batch's
device on first use (cached per device).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import Tensor

from genexp.errors import GenexpError

log = logging.getLogger("genexp")

IMAGE_NORMALIZATIONS = ("channel", "zca", "none")


class _OnDevice:
    """Holds CPU constants and hands out per-device copies."""

    def __init__(self, **tensors: Tensor) -> None:
        self._cpu = tensors
        self._cache: dict[tuple[torch.device, str], Tensor] = {}

    def const(self, name: str, like: Tensor) -> Tensor:
        key = (like.device, name)
        t = self._cache.get(key)
        if t is None:
            t = self._cache[key] = self._cpu[name].to(like.device)
        return t


class Affine(_OnDevice):
    """x -> (x.float() * scale - mean) / std, with `mean`/`std` broadcastable to one example."""

    def __init__(self, mean: Tensor, std: Tensor, scale: float = 1.0) -> None:
        super().__init__(mean=mean.float(), inv_std=1.0 / std.float().clamp_min(1e-8))
        self.scale = float(scale)

    def __call__(self, x: Tensor) -> Tensor:
        x = x.float()
        if self.scale != 1.0:
            x = x * self.scale
        return (x - self.const("mean", x)) * self.const("inv_std", x)


class Scale:
    """x -> x.float() * scale (uint8 images to [0, 1])."""

    def __init__(self, scale: float) -> None:
        self.scale = float(scale)

    def __call__(self, x: Tensor) -> Tensor:
        return x.float() * self.scale


class ZCA(_OnDevice):
    """x -> ((x/255 - mean) @ W), reshaped back: the whitening of Miyato et al. 2018's CIFAR-10."""

    def __init__(self, mean: Tensor, matrix: Tensor, scale: float = 1.0 / 255) -> None:
        super().__init__(mean=mean.float(), matrix=matrix.float())
        self.scale = float(scale)

    def __call__(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(shape[0], -1).float() * self.scale
        # W is symmetric: (x - m) W^T = (x - m) W.
        return ((flat - self.const("mean", flat)) @ self.const("matrix", flat)).view(shape)


def channel_stats(x: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Per-channel mean/std of (N, C, H, W) images times `scale`, in chunks (no full float copy)."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    n = 0
    for i in range(0, len(x), 4096):
        chunk = x[i:i + 4096].to(torch.float64) * scale
        s += chunk.sum(dim=(0, 2, 3))
        s2 += (chunk ** 2).sum(dim=(0, 2, 3))
        n += chunk.numel() // c
    mean = s / n
    std = (s2 / n - mean ** 2).clamp_min(0).sqrt()
    return mean.float().view(c, 1, 1), std.float().view(c, 1, 1)


def fit_zca(x: Tensor, epsilon: float, scale: float = 1.0 / 255) -> tuple[Tensor, Tensor]:
    """(mean, W) with W = U diag(1/sqrt(S + epsilon)) Uᵀ from the covariance of x·scale.

    Float64 throughout (the smallest eigenvalues of natural-image covariances are ~1e-6);
    on a CUDA device when one is visible (seconds), else on the CPU (about a minute for
    CIFAR-10's 50,000 images on 2 cores: the result is cached by `cached_zca`).
    Miyato et al.'s code uses diag(1/sqrt(S) + 1e-6); epsilon inside the root is the
    standard, numerically safe form and matches it for eigenvalues >> epsilon."""
    if epsilon < 0:
        raise GenexpError(f"dataset.zca_epsilon={epsilon} must be >= 0: set e.g. dataset.zca_epsilon=1e-6")
    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    n, d = len(x), x[0].numel()
    total = torch.zeros(d, dtype=torch.float64, device=dev)
    gram = torch.zeros(d, d, dtype=torch.float64, device=dev)
    for i in range(0, n, 4096):
        chunk = x[i:i + 4096].reshape(-1, d).to(dev, torch.float64) * scale
        total += chunk.sum(0)
        gram += chunk.T @ chunk
    mean = total / n
    cov = gram / n - torch.outer(mean, mean)
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp_min(0)
    w = (evecs * (1.0 / torch.sqrt(evals + epsilon))) @ evecs.T
    if not torch.isfinite(w).all():
        raise GenexpError(f"ZCA whitening is not finite with dataset.zca_epsilon={epsilon}: set a larger "
                          f"dataset.zca_epsilon (e.g. 1e-2)")
    return mean.float().cpu(), w.float().cpu()


def cached_zca(x: Tensor, epsilon: float, cache_dir: Path | None) -> ZCA:
    """fit_zca, cached under `cache_dir` keyed by a hash of the training images and epsilon."""
    path = None
    if cache_dir is not None:
        h = hashlib.sha1(x.contiguous().numpy().tobytes())
        h.update(f"{tuple(x.shape)}|{epsilon!r}".encode())
        path = cache_dir / f"zca-{h.hexdigest()[:16]}.pt"
        if path.is_file():
            try:
                saved = torch.load(path, weights_only=True)
                return ZCA(saved["mean"], saved["matrix"])
            except Exception:  # a truncated cache is refitted
                pass
    log.info("fitting ZCA whitening on %d training images (cached afterwards)", len(x))
    mean, matrix = fit_zca(x, epsilon)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"mean": mean, "matrix": matrix}, tmp)
            tmp.replace(path)
        except OSError:  # a read-only data directory just means no cache
            pass
    return ZCA(mean, matrix)


def image_preprocess(x_train: Tensor, normalize: str, zca_epsilon: float = 1e-6, cache_dir: Path | None = None):
    """The preprocess for uint8 (N, C, H, W) images, fitted on `x_train` (the training split only)."""
    if normalize == "channel":
        mean, std = channel_stats(x_train, 1.0 / 255)
        return Affine(mean, std, scale=1.0 / 255)
    if normalize == "zca":
        d = x_train[0].numel()
        if d > 12288:
            raise GenexpError(f"dataset.normalize=zca needs a {d}x{d} matrix for these images: use "
                              f"dataset.normalize=channel, or a smaller dataset.image_size")
        return cached_zca(x_train, zca_epsilon, cache_dir)
    if normalize == "none":
        return Scale(1.0 / 255)
    raise GenexpError(f"dataset.normalize={normalize!r} is unknown: use channel, zca or none")
