"""`flexmatch` (Zhang et al., NeurIPS 2021): FixMatch with curriculum pseudo-labelling.

Each class c gets its own threshold M(β(c)) · τ, M(x) = x / (2 − x), from its learning effect
β(c) = σ(c) / max(max_k σ(k), N − Σ_k σ(k)): σ(c) counts the unlabelled examples whose latest
prediction above τ was c, N is the size of the unlabelled set (the warm-up term: examples never
yet predicted above τ). Per step, as USB's FlexMatchThresholdingHook: the mask uses the effects
from before this batch, then the batch's confident predictions are recorded and the effects
recomputed, unless one bucket holds every example. τ = 0.95, λ_u = 1.

State: the latest prediction of every training example (−1: none yet) and the effects, saved in
checkpoints (`state_dict`) and restored on resume. Logged: `flexmatch`, `mask_ratio`, and
`mean_threshold`, the mean of the class thresholds.
"""
from __future__ import annotations

import torch
from torch import Tensor

from genexp.errors import GenexpError
from genexp.methods.base import Batch
from genexp.methods.weak_strong import WeakStrong
from genexp.models.base import GenexpModel
from genexp.regularizers.weak_strong import (
    class_counts,
    convex_warp,
    flexmatch_mask,
    hard_pseudo_label_loss,
    largest_bucket,
    learning_effect,
)


class FlexMatch(WeakStrong):
    term = "flexmatch"

    def setup(self, model: GenexpModel, *, num_classes: int, num_train: int, device: torch.device,
              num_unlabeled: int | None = None) -> None:
        self.num_classes = num_classes
        self.num_unlabelled = num_train if num_unlabeled is None else num_unlabeled
        # Indexed by position in the training set (Batch.idx_u); positions outside the unlabelled
        # pool stay −1 and are never counted: N − Σσ uses the pool's size, not this buffer's.
        self.latest = torch.full((num_train,), -1, dtype=torch.long, device=device)
        self.effect = torch.zeros(num_classes, device=device)

    def unlabelled(self, logits_weak: Tensor, logits_strong: Tensor,
                   batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        if batch.idx_u is None:
            raise GenexpError("method=flexmatch needs the unlabelled batch's indices (Batch.idx_u): its per-example "
                              "predictions are state")
        mask, pseudo, confident = flexmatch_mask(logits_weak, self.threshold, self.effect)
        loss = hard_pseudo_label_loss(logits_strong, pseudo, mask)
        self.record(batch.idx_u, pseudo, confident)
        return loss, mask, {"mean_threshold": (self.threshold * convex_warp(self.effect)).mean()}

    def record(self, idx: Tensor, pseudo: Tensor, confident: Tensor) -> None:
        """Store the confident predictions, then recompute the effects unless one bucket (a class, or
        'none yet') holds every unlabelled example (USB's `update`). On tensors: no synchronisation."""
        self.latest[idx] = torch.where(confident, pseudo, self.latest[idx])
        sigma = class_counts(self.latest, self.num_classes)
        self.effect = torch.where(largest_bucket(sigma, self.num_unlabelled) < self.num_unlabelled,
                                  learning_effect(sigma, self.num_unlabelled), self.effect)

    def state_dict(self) -> dict:
        return {"latest": self.latest, "effect": self.effect}

    def load_state_dict(self, state: dict) -> None:
        self.latest.copy_(state["latest"])
        self.effect.copy_(state["effect"])
