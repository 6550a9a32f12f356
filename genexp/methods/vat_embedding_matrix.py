"""`vat_embedding_matrix`: the bert4keras variant of VAT (MATH.md §4), text models only.

One batch-level perturbation r of the token-embedding MATRIX W (`model.embedding_layer().weight`)
instead of one per sample on the embedding output:
  d ~ N(0, I) shaped like W
  repeat power_iters times:  d ← ∇_d Σ_b KL(p(x_b; W) ‖ p(x_b; W + ξ·d/‖d‖_F))   (W held constant)
  r = eps · d/‖d‖_F                          (Frobenius norm over the whole matrix)
Objective: CE(f(x_l), y) + weight · mean_b KL(p(x_u,b; W) ‖ p(x_u,b; W + r)),
with the target p(x; W) a clean forward without any gradient (bert4keras drops the θ-gradient
of f_ng too; it differs from per-sample VAT at second order, MATH.md §4) and gradients reaching θ
(W included, at W + r) only through the perturbed pass. The perturbed model is
`torch.func.functional_call(model, {<W's name>: W + r}, (x, mask))`, so whatever `embed()` does
after the lookup (scaling, positions, normalisation) is kept. Rows of tokens absent from the
batch get zero gradient, so after one power iteration r lives on the batch's tokens.
The power iteration runs in float32 (or wider) with autocast off and differentiates w.r.t. d
only; no pass moves BatchNorm statistics. Defaults follow bert4keras: eps = 1, ξ = 10, both
norms of the whole matrix.
"""
from __future__ import annotations

import torch
from torch import Tensor

from genexp.errors import GenexpError
from genexp.methods.base import Batch, LabelledPass, Method, check_positive_int
from genexp.methods.views import unlabelled_inputs
from genexp.models.base import GenexpModel
from genexp.regularizers.divergence import kl_from_logits
from genexp.regularizers.vat import matrix_vat_perturbation


class VATEmbeddingMatrix(Method):
    uses_unlabeled = True
    text_only = True

    def __init__(self, eps: float = 1.0, xi: float = 10.0, power_iters: int = 1, weight: float = 1.0,
                 include_labeled: bool = False, label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        self.check(eps=eps, xi=xi, power_iters=power_iters)
        if power_iters:
            check_positive_int(power_iters=power_iters)
        self.eps, self.xi, self.power_iters, self.include_labeled = eps, xi, power_iters, include_labeled

    @staticmethod
    def matrix_name(model: GenexpModel) -> str:
        """The parameter name of the token-embedding matrix inside `model`."""
        emb = model.embedding_layer()
        if emb is None:
            raise GenexpError(f"method=vat_embedding_matrix needs a text model whose embedding_layer() returns its "
                              f"token embedding; {type(model).__name__} has none: use method=vat")
        for name, p in model.named_parameters():
            if p is emb.weight:
                return name
        raise GenexpError(f"{type(model).__name__}.embedding_layer() is not a registered submodule: "
                          f"register it (self.<name> = the nn.Embedding) or use method=vat")

    def setup(self, model: GenexpModel, *, num_classes: int, num_train: int, device: torch.device,
              num_unlabeled: int | None = None) -> None:
        self.matrix_name(model)  # fail before training, with one line

    @staticmethod
    def logits_with_matrix(model: GenexpModel, name: str, matrix: Tensor, x: Tensor, mask: Tensor | None) -> Tensor:
        return torch.func.functional_call(model, {name: matrix}, (x, mask))

    def perturbation(self, model: GenexpModel, x: Tensor, mask: Tensor | None, target_logits: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:
        """r, shaped like W, with ‖r‖_F = eps: the power-iteration direction of the batch's KL.
        Runs inside the step's `frozen_bn_stats` (`Method.loss`)."""
        name = self.matrix_name(model)

        def logits_at(matrix: Tensor) -> Tensor:
            return self.logits_with_matrix(model, name, matrix, x, mask)

        return matrix_vat_perturbation(logits_at, model.embedding_layer().weight, target_logits=target_logits,
                                       xi=self.xi, eps=self.eps, power_iters=self.power_iters, generator=generator)

    def regularizer(self, model: GenexpModel, batch: Batch,
                    labelled: LabelledPass) -> tuple[list[Tensor], dict[str, Tensor]]:
        x, mask = unlabelled_inputs(batch, self.include_labeled)
        name = self.matrix_name(model)
        with torch.no_grad():
            target = model(x, mask)
        r = self.perturbation(model, x, mask, target, batch.generator)
        w = model.embedding_layer().weight
        reg = kl_from_logits(target, self.logits_with_matrix(model, name, w + r, x, mask))
        return [self.weight * reg], {"vat": reg.detach()}
