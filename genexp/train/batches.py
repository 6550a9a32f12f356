"""One training step and the batches it eats, shared by the trainer and `genexp bench`."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from genexp.data.views import PLAIN, ViewAugment
from genexp.errors import GenexpError
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

    def __init__(self, x: Tensor, y: Tensor, mask: Tensor | None, labelled: Tensor, unlabelled: Tensor, *,
                 batch_size: int, unlabeled_batch_size: int, seed: int, generator: torch.Generator,
                 preprocess: Callable[[Tensor], Tensor] | None = None,
                 augment: Callable[[Tensor, torch.Generator], Tensor] | None = None, d: Dist | None = None,
                 channels_last: bool = False, views: dict[str, ViewAugment] | None = None) -> None:
        self.x, self.y, self.mask = x, y, mask
        self.lab = IndexStream(labelled, batch_size, seed=seed * 1000 + 1)
        self.unl = IndexStream(unlabelled, unlabeled_batch_size, seed=seed * 1000 + 2)
        self.generator, self.preprocess, self.augment = generator, preprocess, augment
        self.d = d or Dist()
        self.channels_last = channels_last
        # `plain` is what every batch gets: preprocess, then the dataset's augment (when on).
        self.views = {PLAIN: ViewAugment(after=augment), **(views or {})}

    def require(self, views: tuple[str, ...], method: str, dataset: str) -> None:
        """Refuse (one line) a method whose views the dataset does not declare, before training."""
        missing = [v for v in views if v not in self.views]
        if missing:
            have = sorted(v for v in self.views if v != PLAIN)
            why = f"it has only {', '.join(have)}" if have else \
                "its inputs are not images: features and text have no image augmentations"
            raise GenexpError(f"method={method} needs the {'/'.join(missing)} view of unlabelled examples (random "
                              f"image augmentation), which dataset={dataset} does not have ({why}): use an image "
                              f"dataset (digits, mnist, cifar10, imagefolder) or a method without augmentation (vat, "
                              f"pseudo_label, mean_teacher)")

    def _view(self, name: str, stored: Tensor) -> Tensor:
        x = self.views[name](stored, self.generator, self.preprocess)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _take(self, stream: IndexStream) -> tuple[Tensor, Tensor, Tensor | None]:
        idx = stream.next()[self.d.rank::self.d.world].to(self.x.device, non_blocking=True)
        return idx, self.x[idx], None if self.mask is None else self.mask[idx]

    def next(self, step: int, unlabelled: bool, views: tuple[str, ...] = ()) -> Batch:
        """The step's labelled batch (plain) and, when `unlabelled`, its unlabelled batch: the plain
        input as `x_u` when `views` is empty, else each named view of the same rows in `u_views`
        (and `x_u` only when `plain` is among them)."""
        il, xl, ml = self._take(self.lab)
        batch = Batch(x_l=self._view(PLAIN, xl), y_l=self.y[il], mask_l=ml, idx_l=il, step=step,
                      generator=self.generator)
        if unlabelled:
            batch.idx_u, stored, batch.mask_u = self._take(self.unl)
            if not views:
                batch.x_u = self._view(PLAIN, stored)
            else:
                batch.u_views = {name: self._view(name, stored) for name in views}
                batch.x_u = batch.u_views.get(PLAIN)
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
