"""One training step and the batches it eats, shared by the trainer and `genexp bench`."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from genexp.methods.base import Batch, Method, StepOutput
from genexp.models.base import GenexpModel
from genexp.train import distributed
from genexp.train.distributed import Dist
from genexp.train.sampling import IndexStream


class BatchSource:
    """Labelled/unlabelled batches gathered from device-resident tensors: no loader, no workers.

    Every rank draws the same global batch and keeps its slice, so the union over ranks is
    exactly the single-process batch.
    """

    def __init__(self, x: Tensor, y: Tensor, mask: Tensor | None, labeled: Tensor, unlabeled: Tensor, *,
                 batch_size: int, unlabeled_batch_size: int, seed: int, generator: torch.Generator,
                 preprocess: Callable[[Tensor], Tensor] | None = None,
                 augment: Callable[[Tensor, torch.Generator], Tensor] | None = None, d: Dist | None = None,
                 channels_last: bool = False) -> None:
        self.x, self.y, self.mask = x, y, mask
        self.lab = IndexStream(labeled, batch_size, seed=seed * 1000 + 1)
        self.unl = IndexStream(unlabeled, unlabeled_batch_size, seed=seed * 1000 + 2)
        self.generator, self.preprocess, self.augment = generator, preprocess, augment
        self.d = d or Dist()
        self.channels_last = channels_last

    def _take(self, stream: IndexStream) -> tuple[Tensor, Tensor, Tensor | None]:
        idx = stream.next()[self.d.rank::self.d.world].to(self.x.device, non_blocking=True)
        x = self.x[idx]
        if self.preprocess is not None:
            x = self.preprocess(x)
        if self.augment is not None:
            x = self.augment(x, self.generator)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return idx, x, None if self.mask is None else self.mask[idx]

    def next(self, step: int, unlabeled: bool) -> Batch:
        il, xl, ml = self._take(self.lab)
        batch = Batch(x_l=xl, y_l=self.y[il], mask_l=ml, idx_l=il, step=step, generator=self.generator)
        if unlabeled:
            batch.idx_u, batch.x_u, batch.mask_u = self._take(self.unl)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"labeled": self.lab.state_dict(), "unlabeled": self.unl.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lab.load_state_dict(state["labeled"])
        self.unl.load_state_dict(state["unlabeled"])
        self.generator.set_state(state["generator"].cpu())


def train_step(model: GenexpModel, method: Method, optimizer: torch.optim.Optimizer, batch: Batch, *,
               amp: Callable[[], Any], params: list[torch.nn.Parameter], d: Dist | None = None,
               grad_clip: float = 0.0, loss: Callable[[GenexpModel, Batch], StepOutput] | None = None) -> StepOutput:
    """One optimizer step on `batch`; `loss` is the method's loss as the run calls it (compiled or not)."""
    with amp():
        out = (loss or method.loss)(model, batch)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    distributed.average_gradients(params, d or Dist())
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    method.after_step(model, batch)
    return out
