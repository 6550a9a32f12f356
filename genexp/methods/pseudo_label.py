"""`pseudo_label` (Lee 2013, with the confidence threshold of Oliver et al. 2018).

Objective: CE(f(x_l), y) + w(t) · (1/B_u) Σ_b 1[max_i p_i(x_u,b) ≥ threshold] · CE(f(x_u,b), ŷ_b),
ŷ_b = argmax_i p_i(x_u,b) from the same forward, taken without gradient; the mean is over the
whole unlabelled batch (unconfident examples count as 0). w(t) = weight · min(1, t/rampup_steps)
(linear warm-up; rampup_steps = 0: constant). The unlabelled forward leaves BatchNorm running
statistics unchanged. Logged: `pl_mask`, the fraction of unlabelled examples above threshold.
"""
from __future__ import annotations

from torch import Tensor

from genexp.methods.base import Batch, LabelledPass, Method, check_positive_int
from genexp.methods.ramps import linear_rampup
from genexp.methods.views import clean_logits, unlabelled_view
from genexp.models.base import GenexpModel
from genexp.regularizers.pseudo_label import pseudo_label_loss


class PseudoLabel(Method):
    uses_unlabeled = True

    def __init__(self, threshold: float = 0.8, weight: float = 3.0, rampup_steps: int = 300,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        self.check(threshold=threshold, rampup_steps=rampup_steps)
        if rampup_steps:
            check_positive_int(rampup_steps=rampup_steps)
        self.threshold, self.rampup_steps = threshold, rampup_steps

    def regularizer(self, model: GenexpModel, batch: Batch,
                    labelled: LabelledPass) -> tuple[list[Tensor], dict[str, Tensor]]:
        reg, mask = pseudo_label_loss(clean_logits(unlabelled_view(model, batch), keep_graph=True), self.threshold)
        w = self.weight * linear_rampup(batch.step, self.rampup_steps)
        return [w * reg], {"pseudo_label": reg.detach(), "pl_mask": mask.mean()}
