"""`noise_consistency` (Π-model form of MATH.md §2): CE + weight·l(f(x_u + ε), f_ng(x_u)).

Objective: CE(f(x_l), y) + weight · (1/k) Σ_{j≤k} mean_b l(f(x_u,b + ε_j), f_ng(x_u,b)),
ε ~ N(0, σ²I) on `model.embed(x_u)` (padding untouched), f = softmax, f_ng a clean forward
without gradient, and l = Σ_i (F_i − f_i)² (`consistency=mse`, ≈ σ² Σ_i ‖∇_x f_i‖²) or
KL(f_ng(x) ‖ f(x+ε)) (`consistency=kl`, ≈ ½σ² Σ_i ‖∇_x f_i‖²/f_i). Unlike Laine & Aila's
two-noisy-pass Π-model the target is the clean prediction, as in MATH.md §2. The unlabelled
passes leave BatchNorm running statistics unchanged.

`track_gp=true` also logs, every step, the penalty the noise term approximates (`implied`:
σ²·Σ_i‖∇_x f_i‖² for mse, ½σ²·Σ_i‖∇_x f_i‖²/f_i for kl; exact Jacobians, no gradient), so
metrics.jsonl shows whether train_consistency tracks train_implied (article 7466's claim).
"""
from __future__ import annotations

import torch
from torch import Tensor

from genexp.errors import GenexpError, check_choice
from genexp.methods.base import Batch, LabelledPass, Method, check_positive_int
from genexp.methods.views import clean_logits, unlabelled_view
from genexp.models.base import GenexpModel
from genexp.models.batchnorm import batchnorms
from genexp.regularizers.gradient_penalty import consistency_gradient_penalty
from genexp.regularizers.noise import noise_consistency_loss


class NoiseConsistency(Method):
    uses_unlabeled = True

    def __init__(self, sigma: float = 0.3, samples: int = 1, consistency: str = "mse", weight: float = 10.0,
                 include_labeled: bool = False, label_smoothing: float = 0.0, track_gp: bool = False) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        self.check(sigma=sigma)
        check_positive_int(samples=samples)
        self.consistency = check_choice("consistency", consistency, ("mse", "kl"))
        self.sigma, self.samples, self.include_labeled = sigma, samples, include_labeled
        self.track_gp = bool(track_gp)

    def setup(self, model: GenexpModel, *, num_classes: int, num_train: int, device: torch.device,
              num_unlabeled: int | None = None) -> None:
        if self.track_gp and batchnorms(model):
            raise GenexpError("method.track_gp=true computes exact per-sample Jacobians and cannot run a model with "
                              "BatchNorm: use a model without BatchNorm or set method.track_gp=false")

    def regularizer(self, model: GenexpModel, batch: Batch,
                    labelled: LabelledPass) -> tuple[list[Tensor], dict[str, Tensor]]:
        v = unlabelled_view(model, batch, self.include_labeled)
        reg = noise_consistency_loss(v.forward, v.h, sigma=self.sigma, samples=self.samples,
                                     consistency=self.consistency, target_logits=clean_logits(v),
                                     generator=batch.generator, mask=v.pmask)
        logs = {"consistency": reg.detach()}
        if self.track_gp:
            if v.pmask is not None:
                raise GenexpError("method.track_gp=true cannot pass the padding mask of text inputs to its per-sample "
                                  "Jacobians: set method.track_gp=false for text models")
            factor = self.sigma ** 2 if self.consistency == "mse" else self.sigma ** 2 / 2
            logs["implied"] = factor * consistency_gradient_penalty(
                v.forward, v.h.detach(), weighting=self.consistency, create_graph=False, model=model)
        return [self.weight * reg], logs
