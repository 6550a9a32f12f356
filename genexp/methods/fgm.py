"""`fgm`: supervised adversarial training with the fast gradient method (MATH.md §3).

Objective: CE(f(h), y) + weight · CE(f(h + r), y), h = model.embed(x_l) (the input for
image/vector models, the token embeddings for text models; padding never perturbed), with
r = eps · g/‖g‖₂ per sample, g = ∇_h CE(f(h), y), r treated as a constant. This is Goodfellow
et al.'s (2015) mix α·CE(x) + (1 − α)·CE(x + r) with α = 1/(1 + weight), scaled by
(1 + weight): weight = 1 is their α = 0.5 at twice the loss scale. The adversarial pass leaves
BatchNorm running statistics unchanged. `pgd` (genexp.methods.pgd) changes only r.
"""
from __future__ import annotations

from torch import Tensor

from genexp.methods.base import Batch, LabelledPass, Method
from genexp.methods.views import View, labelled_view
from genexp.models.base import GenexpModel
from genexp.regularizers.adversarial import adversarial_loss, fgm_perturbation


class FGM(Method):
    def __init__(self, eps: float = 1.0, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        self.check(eps=eps)
        self.eps = eps

    def perturbation(self, model: GenexpModel, v: View, batch: Batch) -> Tensor:
        return fgm_perturbation(v.forward, v.h, batch.y_l, eps=self.eps, mask=v.pmask)

    def labelled_pass(self, model: GenexpModel, batch: Batch) -> LabelledPass:
        # Through the same embedding as the perturbation: an embedding with dropout must not be
        # drawn twice, so the regularizer perturbs this pass's view.
        v = labelled_view(model, batch)
        logits_l = v.forward(v.h)
        return LabelledPass(self.cross_entropy(logits_l, batch.y_l), logits_l, view=v)

    def regularizer(self, model: GenexpModel, batch: Batch,
                    labelled: LabelledPass) -> tuple[list[Tensor], dict[str, Tensor]]:
        v = labelled.view
        r = self.perturbation(model, v, batch)
        adv = adversarial_loss(v.forward, v.h, batch.y_l, r, label_smoothing=self.label_smoothing)
        return [self.weight * adv], {"adv": adv.detach()}
