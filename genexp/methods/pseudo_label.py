"""`pseudo_label` (Lee 2013, with the confidence threshold of Oliver et al. 2018).

Objective: CE(f(x_l), y) + w(t) · (1/B_u) Σ_b 1[max_i p_i(x_u,b) ≥ threshold] · CE(f(x_u,b), ŷ_b),
ŷ_b = argmax_i p_i(x_u,b) from the same forward, taken without gradient; the mean is over the
whole unlabelled batch (unconfident examples count as 0). w(t) = weight · min(1, t/rampup_steps)
(linear warm-up; rampup_steps = 0: constant). The unlabelled forward leaves BatchNorm running
statistics unchanged. Logged: `pl_mask`, the fraction of unlabelled examples above threshold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genexp.methods._shared import check_positive_int, clean_logits, linear_rampup, unlabelled_view
from genexp.methods.base import Batch, Method, StepOutput
from genexp.models.base import GenexpModel
from genexp.regularizers._common import widen


class PseudoLabel(Method):
    uses_unlabeled = True

    def __init__(self, threshold: float = 0.8, weight: float = 3.0, rampup_steps: int = 300,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        self.check(threshold=threshold, rampup_steps=rampup_steps)
        if rampup_steps:
            check_positive_int(rampup_steps=rampup_steps)
        self.threshold, self.rampup_steps = threshold, rampup_steps

    def loss(self, model: GenexpModel, batch: Batch) -> StepOutput:
        sup, logits_l = self.supervised(model, batch)
        v = unlabelled_view(model, batch)
        logits_u = widen(clean_logits(model, v, keep_graph=True))
        with torch.no_grad():
            conf, pseudo = F.softmax(logits_u, dim=-1).max(dim=-1)
            mask = (conf >= self.threshold).to(logits_u.dtype)
        reg = (F.cross_entropy(logits_u, pseudo, reduction="none") * mask).mean()
        w = self.weight * linear_rampup(batch.step, self.rampup_steps)
        return StepOutput(loss=sup + w * reg, logits_l=logits_l,
                          logs={"sup": sup.detach(), "pseudo_label": reg.detach(), "pl_mask": mask.mean()})
