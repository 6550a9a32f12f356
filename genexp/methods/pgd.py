"""`pgd`: supervised adversarial training with projected gradient ascent (Madry et al. 2018).

Objective: CE(f(h), y) + weight · CE(f(h + r), y) exactly as `fgm` (genexp.methods.fgm), with
r from `steps` steps of projected ascent on CE inside the per-sample `norm` ball of radius
eps: L2 steps r ← Π(r + alpha·g/‖g‖₂), L∞ steps r ← clamp(r + alpha·sign g, ±eps), from a
random start in the ball (`random_start`) or from 0. weight large (e.g. 10) approaches
Madry's pure adversarial objective up to scale.
"""
from __future__ import annotations

from torch import Tensor

from genexp.errors import check_choice
from genexp.methods.base import Batch, check_positive_int
from genexp.methods.fgm import FGM
from genexp.methods.views import View
from genexp.models.base import GenexpModel
from genexp.regularizers.adversarial import pgd_perturbation


class PGD(FGM):
    def __init__(self, eps: float = 1.0, alpha: float = 0.4, steps: int = 3, norm: str = "l2",
                 random_start: bool = True, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(eps=eps, weight=weight, label_smoothing=label_smoothing)
        self.check(alpha=alpha)
        check_positive_int(steps=steps)
        self.norm = check_choice("norm", norm, ("l2", "linf"))
        self.alpha, self.steps, self.random_start = alpha, steps, random_start

    def perturbation(self, model: GenexpModel, v: View, batch: Batch) -> Tensor:
        return pgd_perturbation(v.forward, v.h, batch.y_l, eps=self.eps, alpha=self.alpha, steps=self.steps,
                                norm=self.norm, mask=v.pmask, generator=batch.generator,
                                random_start=self.random_start)
