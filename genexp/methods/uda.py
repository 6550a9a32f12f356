"""`uda` (Xie et al., NeurIPS 2020), as USB runs it.

Objective: CE(f(x_l), y) + λ_u · (1/(μB)) Σ_b 1[max q_b ≥ β] · KL(sharpen(q_b, T) ‖ p(A(u_b))),
q_b = softmax f(α(u_b)) without gradient, sharpen(q, T) = q^{1/T} / Σ q^{1/T}. Defaults (USB):
T = 0.4, β = 0.8 (`threshold`), λ_u = 1; no training-signal annealing (optional in USB, off there).
Logged: `uda`, the unlabelled term, and `mask_ratio`, the fraction above β.
"""
from __future__ import annotations

from torch import Tensor

from genexp.errors import GenexpError
from genexp.methods.base import Batch
from genexp.methods.weak_strong import WeakStrong
from genexp.regularizers.weak_strong import uda_loss


class UDA(WeakStrong):
    term = "uda"

    def __init__(self, weight: float = 1.0, threshold: float = 0.8, temperature: float = 0.4,
                 joint_forward: bool = True, label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, threshold=threshold, joint_forward=joint_forward,
                         label_smoothing=label_smoothing)
        if temperature is None or temperature <= 0:
            raise GenexpError(f"method.temperature={temperature} must be > 0: set method.temperature=0.4 (UDA's "
                              f"sharpening; smaller is sharper)")
        self.temperature = temperature

    def unlabelled(self, logits_weak: Tensor, logits_strong: Tensor,
                   batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        loss, mask = uda_loss(logits_weak, logits_strong, self.temperature, self.threshold)
        return loss, mask, {}
