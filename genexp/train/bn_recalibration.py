"""Evaluation with BatchNorm statistics re-estimated on unlabelled training data.

With few labels the labelled batch is the same handful of examples every step, so the running
statistics BatchNorm keeps (updated by the supervised pass only, so that adversarial passes
cannot leak into them) describe those examples, not the data. Miyato et al.'s MNIST code
re-estimates them on the unlabelled set before its final evaluation ("finetune batch stat",
github.com/takerum/vat train_mnist_semisup.py); `bn_recalibrate=N` does so before every
evaluation, on a copy, so training itself is unchanged.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from genexp.regularizers._common import batchnorms


def recalibrated(model: nn.Module, x: Tensor, idx: Tensor, *, examples: int, batch_size: int, seed: int,
                 mask: Tensor | None = None, preprocess: Callable[[Tensor], Tensor] | None = None) -> nn.Module:
    """A copy of `model` whose BatchNorm running statistics are the plain average over batches of
    `batch_size` rows from `examples` rows of x[idx] (all of idx if fewer), in training mode (noise
    and dropout on, as in the authors' code). `model` itself, its buffers and every random
    stream are left as they were. A model without BatchNorm is returned as is."""
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
