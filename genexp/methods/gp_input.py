"""`gp_input`: CE + weight·‖∇_x CE‖² on the labelled batch (MATH.md §3/§5, supervised).

Objective: CE(f(x_l), y) + weight · mean_b ‖∇_h CE(f(h_b), y_b)‖², h = model.embed(x_l) (the
input for image/vector models, the token embeddings for text models), each sample's gradient
that of its own (unsmoothed) loss; differentiated into θ by double backward. To first order
this is what FGM training penalises (ε₀‖∇_x l‖, MATH.md §3). The penalty's extra forward
leaves BatchNorm running statistics unchanged.
"""
from __future__ import annotations

from torch import Tensor

from genexp.methods.base import Batch, LabelledPass, Method
from genexp.methods.views import labelled_view
from genexp.models.base import GenexpModel
from genexp.regularizers.gradient_penalty import input_gradient_penalty


class GPInput(Method):
    def __init__(self, weight: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)

    def regularizer(self, model: GenexpModel, batch: Batch,
                    labelled: LabelledPass) -> tuple[list[Tensor], dict[str, Tensor]]:
        v = labelled_view(model, batch)
        reg = input_gradient_penalty(v.forward, v.h, batch.y_l)
        return [self.weight * reg], {"grad_penalty": reg.detach()}
