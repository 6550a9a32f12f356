"""`gp_consistency`: CE + weight·Σ_i w_i ‖∇_x f_i(x_u)‖² on unlabelled data (MATH.md §2).

Objective: CE(f(x_l), y) + weight · mean_b Σ_i w_i ‖∇_h f_i(h_b)‖², h = model.embed(x_u),
f = softmax(model.head(h)), w_i = 1 (`weighting=mse`, the σ→0 limit of the MSE noise
consistency divided by σ²) or w_i = 1/f_i detached (`weighting=kl`, ×½σ² the KL consistency).
`estimator=exact` builds each sample's Jacobian (torch.func); `estimator=rademacher` uses
E_η ‖∇ Σ_i η_i √w_i f_i‖² with `samples` draws of η ∈ {±1}^C (one backward each). The
penalty is differentiated into θ (double backward). The unlabelled pass leaves BatchNorm
running statistics unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor

from genexp.errors import GenexpError, check_choice
from genexp.methods.base import Batch, LabelledPass, Method, StepOutput, check_positive_int
from genexp.methods.views import unlabelled_view
from genexp.models.base import GenexpModel
from genexp.models.batchnorm import batchnorms
from genexp.regularizers.gradient_penalty import consistency_gradient_penalty


class GPConsistency(Method):
    uses_unlabeled = True

    def __init__(self, weighting: str = "mse", estimator: str = "exact", samples: int = 1, weight: float = 1.0,
                 include_labeled: bool = False, label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        check_positive_int(samples=samples)
        self.weighting = check_choice("weighting", weighting, ("mse", "kl"))
        self.estimator = check_choice("estimator", estimator, ("exact", "rademacher"))
        self.samples, self.include_labeled = samples, include_labeled

    def setup(self, model: GenexpModel, *, num_classes: int, num_train: int, device: torch.device,
              num_unlabeled: int | None = None) -> None:
        if self.estimator == "exact":
            self._check_exact(model, None)  # fail before training, not at step 0

    def _check_exact(self, model: GenexpModel, batch: Batch | None) -> None:
        if any(m.training for m in batchnorms(model)):
            raise GenexpError("method.estimator=exact evaluates the model one sample at a time and cannot use "
                              "train-mode BatchNorm: set method.estimator=rademacher (or use a model without BatchNorm)")
        if batch is not None and batch.mask_u is not None:
            raise GenexpError("method.estimator=exact runs the model one sample at a time and cannot pass the "
                              "padding mask of text inputs: set method.estimator=rademacher")

    def loss(self, model: GenexpModel, batch: Batch) -> StepOutput:
        if self.estimator == "exact":
            self._check_exact(model, batch)  # before the supervised pass moves any statistics
        return super().loss(model, batch)

    def regularizer(self, model: GenexpModel, batch: Batch,
                    labelled: LabelledPass) -> tuple[list[Tensor], dict[str, Tensor]]:
        v = unlabelled_view(model, batch, self.include_labeled)
        reg = consistency_gradient_penalty(v.forward, v.h, weighting=self.weighting, estimator=self.estimator,
                                           samples=self.samples, generator=batch.generator, model=model)
        return [self.weight * reg], {"grad_penalty": reg.detach()}
