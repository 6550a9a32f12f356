"""BatchNorm: finding a model's layers, freezing their running statistics, re-estimating them.

Who freezes what: `Method.loss` (genexp.methods.base) runs the supervised pass with live
statistics and every other pass of the step inside one `frozen_bn_stats`. A regularizer function
called on its own with a module freezes it itself (`freezing(owning_module(forward, model))`).
`recalibrated` re-estimates the statistics on unlabelled data for evaluation (`bn_recalibrate`).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from genexp.models.layers import layers_of


def batchnorms(module: nn.Module | None) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `module`, looked up once per model (models/layers.py)."""
    return [] if module is None else layers_of(module, (nn.modules.batchnorm._BatchNorm,))  # type: ignore[return-value]


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


def owning_module(forward: Callable[[Tensor], Tensor], model: nn.Module | None) -> nn.Module | None:
    """The module whose BatchNorm buffers to protect: explicit `model`, or `forward` itself."""
    if model is not None:
        return model
    if isinstance(forward, nn.Module):
        return forward
    owner = getattr(forward, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def recalibrated(model: nn.Module, x: Tensor, idx: Tensor, *, examples: int, batch_size: int, seed: int,
                 mask: Tensor | None = None, preprocess: Callable[[Tensor], Tensor] | None = None) -> nn.Module:
    """A copy of `model` whose BatchNorm running statistics are the plain average over batches of
    `batch_size` rows from `examples` rows of x[idx] (all of idx if fewer), in training mode (noise
    and dropout on, as in the authors' code). `model` itself, its buffers and every random
    stream are left as they were. A model without BatchNorm is returned as is.

    Why: with few labels the labelled batch is the same handful of examples every step, so the
    running statistics (updated by the supervised pass only, so that adversarial passes cannot
    leak into them) describe those examples, not the data. Miyato et al.'s MNIST code re-estimates
    them on the unlabelled set before its final evaluation ("finetune batch stat",
    github.com/takerum/vat train_mnist_semisup.py); `bn_recalibrate=N` does so before every
    evaluation, on a copy, so training itself is unchanged.
    """
    if not batchnorms(model) or len(idx) == 0:
        return model
    copy_ = copy.deepcopy(model)
    for bn in batchnorms(copy_):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: every batch counts the same
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        take = idx[torch.randperm(len(idx), generator=g)[:examples].to(idx.device)]
        copy_.train()
        for i in range(0, len(take), batch_size):
            j = take[i:i + batch_size]
            if len(j) < 2:  # BatchNorm cannot normalise a single row
                break
            xb = x[j] if preprocess is None else preprocess(x[j])
            copy_(xb, None if mask is None else mask[j])
    copy_.eval()
    return copy_
