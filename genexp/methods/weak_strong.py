"""What FixMatch, UDA and FlexMatch share: a weak and a strong view of each unlabelled example
(genexp.data.views), a target from the weak view, a loss on the strong one (regularizers.weak_strong).

BatchNorm: by default one forward over labelled + weak + strong rows, as every reference
implementation does (FixMatch's and USB's `use_cat`): batch statistics over the union, and the
running statistics move with it. This is the one place genexp lets passes other than the
supervised one move BatchNorm's statistics: these methods are defined with it, and their
published numbers were measured with it. `joint_forward=false` runs the genexp way instead: the
labelled pass moves the statistics, the weak pass (no gradient) and the strong pass run inside
`frozen_bn_stats` on their own batch statistics.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from genexp.methods.base import Batch, Method, StepOutput, check_probability
from genexp.models.base import GenexpModel
from genexp.models.batchnorm import frozen_bn_stats


class WeakStrong(Method):
    """Supervised CE + weight · `unlabelled(logits_weak, logits_strong, batch)`."""

    uses_unlabeled = True
    views: ClassVar[tuple[str, ...]] = ("weak", "strong")
    term: ClassVar[str] = "unsup"  # the unlabelled term's name in the logs

    def __init__(self, weight: float = 1.0, threshold: float = 0.95, joint_forward: bool = True,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        check_probability(threshold=threshold)
        self.threshold, self.joint_forward = threshold, bool(joint_forward)

    def logits(self, model: GenexpModel, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(labelled, weak (detached), strong) logits of the step."""
        x_w, x_s = batch.u_views["weak"], batch.u_views["strong"]
        if self.joint_forward:
            l, u = len(batch.x_l), len(x_w)
            logits = model(torch.cat([batch.x_l, x_w, x_s]), None)
            return logits[:l], logits[l:l + u].detach(), logits[l + u:]
        logits_l = model(batch.x_l, batch.mask_l)
        with frozen_bn_stats(model):
            with torch.no_grad():
                logits_w = model(x_w, batch.mask_u)
            return logits_l, logits_w, model(x_s, batch.mask_u)

    def loss(self, model: GenexpModel, batch: Batch) -> StepOutput:
        logits_l, logits_w, logits_s = self.logits(model, batch)
        sup = self.cross_entropy(logits_l, batch.y_l)
        unsup, mask, logs = self.unlabelled(logits_w, logits_s, batch)
        return StepOutput(loss=sup + self.weight * unsup, logits_l=logits_l,
                          logs={"sup": sup.detach(), self.term: unsup.detach(), "mask_ratio": mask.mean(), **logs})

    def unlabelled(self, logits_weak: Tensor, logits_strong: Tensor,
                   batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(the unweighted unlabelled term, its 0/1 mask, extra logs)."""
        raise NotImplementedError
