"""Scoring a model on a labelled subset (validation, test), in eval mode, sharded over ranks."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genexp.train import distributed
from genexp.train.distributed import Dist


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: Tensor, y: Tensor, mask: Tensor | None, amp: Any,
             preprocess: Any = None, d: Dist | None = None, batch_size: int = 1024,
             on_batch: Any = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode; under torchrun each rank scores a shard.
    `on_batch(done, total)` reports progress (examples of this rank's shard)."""
    d = d or Dist()
    was_training = model.training
    model.eval()
    correct, loss = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    idx = torch.arange(d.rank, len(y), d.world, device=x.device)
    for i in range(0, len(idx), batch_size):
        j = idx[i:i + batch_size]
        xb = x[j] if preprocess is None else preprocess(x[j])
        with amp():
            logits = model(xb, None if mask is None else mask[j])
        correct += (logits.argmax(-1) == y[j]).sum()
        loss += F.cross_entropy(logits.float(), y[j], reduction="sum")
        if on_batch is not None:
            on_batch(min(i + batch_size, len(idx)), len(idx))
    model.train(was_training)
    totals = distributed.all_sum(torch.stack([correct, loss]), d)
    n = max(len(y), 1)
    return totals[0].item() / n, totals[1].item() / n
