"""`fixmatch` (Sohn et al., NeurIPS 2020).

Objective: CE(f(x_l), y) + λ_u · (1/(μB)) Σ_b 1[max q_b ≥ τ] · CE(f(A(u_b)), argmax q_b),
q_b = softmax f(α(u_b)) without gradient; α the weak view, A the strong one (genexp.data.views).
Defaults as in the paper / USB: τ = 0.95, λ_u = 1. μ is `unlabeled_batch_size / batch_size`.
Logged: `fixmatch`, the unlabelled term, and `mask_ratio`, the fraction of unlabelled examples
above τ.
"""
from __future__ import annotations

from torch import Tensor

from genexp.methods.base import Batch
from genexp.methods.weak_strong import WeakStrong
from genexp.regularizers.weak_strong import fixmatch_loss


class FixMatch(WeakStrong):
    term = "fixmatch"

    def unlabelled(self, logits_weak: Tensor, logits_strong: Tensor,
                   batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        loss, mask = fixmatch_loss(logits_weak, logits_strong, self.threshold)
        return loss, mask, {}
