"""The textbook VAT port `genexp bench --textbook` times beside genexp's VAT: what the public VAT
code does, as a baseline for speed and memory only (never a genexp method, never trained)."""
from __future__ import annotations

import torch

from genexp.methods.base import Batch, Method, StepOutput
from genexp.models.base import GenexpModel


class TextbookVAT(Method):
    """The comparison baseline only (never a genexp method): a minimal port of the public VAT code.

    As those ports write it: `loss.backward()` in the power iteration (filling every weight's
    .grad, then `model.zero_grad()`), a batch-mean KL against softmax targets, per-sample L2
    normalisation, and BatchNorm statistics left to the model (every pass in training mode
    updates them; no freezing)."""

    uses_unlabeled = True

    def __init__(self, eps: float = 1.0, xi: float = 1e-6, power_iters: int = 1, weight: float = 1.0) -> None:
        super().__init__(weight=weight)
        self.eps, self.xi, self.power_iters = eps, xi, power_iters

    @staticmethod
    def l2_normalize(d: torch.Tensor) -> torch.Tensor:
        return d / (d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1))) + 1e-8)

    def loss(self, model: GenexpModel, batch: Batch) -> StepOutput:
        import torch.nn.functional as F

        sup, logits_l = self.supervised(model, batch)
        x, mask = batch.x_u, batch.mask_u
        with torch.no_grad():
            p = F.softmax(model(x, mask), dim=1)
        d = self.l2_normalize(torch.randn_like(x))
        for _ in range(self.power_iters):
            d.requires_grad_()
            F.kl_div(F.log_softmax(model(x + self.xi * d, mask), dim=1), p, reduction="batchmean").backward()
            d = self.l2_normalize(d.grad)
            model.zero_grad()
        lds = F.kl_div(F.log_softmax(model(x + self.eps * d, mask), dim=1), p, reduction="batchmean")
        return StepOutput(loss=sup + self.weight * lds, logits_l=logits_l)
