"""`vat`: cross-entropy + α·KL(p(x) ‖ p(x + r_adv)) on unlabelled data (MATH.md §4).

With `entmin_weight` > 0 this is VAT+EntMin (Miyato et al. 2018, §4): the clean unlabelled
forward then keeps its graph and also carries the entropy term.
"""
from __future__ import annotations

import torch

from genexp.methods.base import Batch, Method, StepOutput
from genexp.models.base import GenexpModel
from genexp.regularizers._common import frozen_bn_stats
from genexp.regularizers.vat import vat_loss


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


class VAT(Method):
    uses_unlabeled = True

    def __init__(self, eps: float = 1.0, xi: float = 1e-6, power_iters: int = 1, weight: float = 1.0,
                 include_labeled: bool = False, entmin_weight: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        self.check(eps=eps, xi=xi, power_iters=power_iters, entmin_weight=entmin_weight)
        self.eps, self.xi, self.power_iters = eps, xi, int(power_iters)
        self.include_labeled, self.entmin_weight = include_labeled, entmin_weight

    def loss(self, model: GenexpModel, batch: Batch) -> StepOutput:
        sup, logits_l = self.supervised(model, batch)
        x_u, mask_u = batch.x_u, batch.mask_u
        if self.include_labeled:
            x_u = torch.cat([batch.x_l, x_u])
            mask_u = None if mask_u is None else torch.cat([batch.mask_l, mask_u])
        h = model.embed(x_u)

        def forward(z: torch.Tensor) -> torch.Tensor:
            return model.head(z, mask_u)

        # One clean forward serves the VAT target and the entropy term; it keeps a graph only
        # when the entropy term needs one, and never moves BatchNorm statistics.
        with frozen_bn_stats(model), torch.set_grad_enabled(self.entmin_weight > 0):
            logits_u = forward(h)
        reg = vat_loss(forward, h, xi=self.xi, eps=self.eps, power_iters=self.power_iters,
                       target_logits=logits_u.detach(), generator=batch.generator,
                       mask=model.perturb_mask(mask_u), model=model)
        total = sup + self.weight * reg
        logs = {"sup": sup.detach(), "vat": reg.detach()}
        if self.entmin_weight > 0:
            ent = entropy(logits_u)
            total = total + self.entmin_weight * ent
            logs["entropy"] = ent.detach()
        return StepOutput(loss=total, logits_l=logits_l, logs=logs)
