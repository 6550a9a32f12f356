"""`gp_param`: CE + weight·‖∇_θ CE‖² (MATH.md §5; Barrett & Dherin 2021, explicit form of
"implicit gradient regularization", supervised).

Objective: L(θ) + weight · ‖∇_θ L(θ)‖², L = CE(f(x_l), y) (with label smoothing if set), θ
every trainable parameter. Gradient descent with step size h follows, to first order in h,
the flow of L + (h/4)‖∇_θ L‖², so weight ≈ lr/4 reproduces plain SGD's implicit penalty and
larger values strengthen it. `gradient=double_backward` differentiates ‖∇_θ L‖² exactly;
`gradient=finite_difference` approximates its θ-gradient 2Hg by a gradient difference at
θ + fd_step·g/‖g‖ (one more forward/backward, no double backward); its second pass replays
the same dropout masks and leaves BatchNorm running statistics unchanged.
"""
from __future__ import annotations

import torch

from genexp.errors import check_choice
from genexp.methods.base import Batch, LabelledPass, Method
from genexp.models.base import GenexpModel
from genexp.regularizers.gradient_penalty import param_gradient_penalty
from genexp.regularizers.rng_replay import RngReplay


class GPParam(Method):
    def __init__(self, weight: float = 1.0, gradient: str = "double_backward", fd_step: float = 1e-3,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        self.check(fd_step=fd_step)
        self.gradient = check_choice("gradient", gradient, ("double_backward", "finite_difference"))
        self.fd_step = fd_step

    def labelled_pass(self, model: GenexpModel, batch: Batch) -> LabelledPass:
        # The finite difference's second pass replays this pass's dropout masks: capture them first.
        replay = RngReplay(batch.x_l.device) if self.gradient == "finite_difference" else None
        return LabelledPass(*self.supervised(model, batch), replay=replay)

    def regularizer(self, model: GenexpModel, batch: Batch,
                    labelled: LabelledPass) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        params = [p for p in model.parameters() if p.requires_grad]
        closure = None
        if labelled.replay is not None:

            def closure() -> torch.Tensor:
                # Same batch, same dropout masks as the supervised pass.
                with labelled.replay.replay():
                    return self.supervised(model, batch)[0]

        reg = param_gradient_penalty(labelled.loss, params, method=self.gradient, closure=closure, h=self.fd_step)
        return [self.weight * reg], {"grad_penalty": reg.detach()}
