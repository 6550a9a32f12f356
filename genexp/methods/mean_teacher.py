"""`mean_teacher` (Tarvainen & Valpola 2017): consistency with an exponential-moving-average teacher.

Objective: CE(f_θ(x_l), y) + w(t) · mean_b Σ_i (softmax f_θ(x_u + ε)_i − softmax f_θ'(x_u + ε')_i)²,
ε, ε' independent N(0, σ²I) on `model.embed(x_u)` (padding untouched), the teacher θ' without
gradient, w(t) = weight · exp(−5(1 − min(1, t/rampup_steps))²) (the paper's sigmoid ramp-up).
The squared error is summed over classes (the paper's code divides it by C: its weight 100 on
10 classes is weight 10 here). After every optimizer step θ' ← d·θ' + (1 − d)·θ with
d = min(1 − 1/(t + 1), ema_decay), t the number of steps done (the paper's code: an early
teacher follows the student closely); floating-point buffers (BatchNorm statistics) are
averaged the same way, others copied. The teacher runs in the student's train/eval mode
(dropout active in training) and its forward moves no BatchNorm statistics; neither does the
student's unlabelled forward. With `eval_teacher` the trainer evaluates the teacher.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from genexp.errors import GenexpError
from genexp.methods.base import Batch, LabelledPass, Method, check_positive_int, check_probability
from genexp.methods.ramps import sigmoid_rampup
from genexp.methods.views import unlabelled_inputs, view
from genexp.models.base import GenexpModel
from genexp.regularizers.consistency import ema_update, softmax_mse
from genexp.regularizers.noise import add_noise


class MeanTeacher(Method):
    uses_unlabeled = True

    def __init__(self, sigma: float = 0.3, weight: float = 10.0, rampup_steps: int = 300, ema_decay: float = 0.99,
                 eval_teacher: bool = True, include_labeled: bool = False, label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        self.check(sigma=sigma, rampup_steps=rampup_steps)
        if rampup_steps:
            check_positive_int(rampup_steps=rampup_steps)
        check_probability(ema_decay=ema_decay)
        self.sigma, self.rampup_steps, self.ema_decay = sigma, rampup_steps, ema_decay
        self.eval_teacher, self.include_labeled = eval_teacher, include_labeled
        self.teacher: GenexpModel | None = None
        self._pending: dict | None = None

    def setup(self, model: GenexpModel, *, num_classes: int, num_train: int, device: torch.device,
              num_unlabeled: int | None = None) -> None:
        self.teacher = copy.deepcopy(model)
        self.teacher.requires_grad_(False)
        if self._pending is not None:
            self.teacher.load_state_dict(self._pending)
            self._pending = None

    def _teacher(self) -> GenexpModel:
        if self.teacher is None:
            raise GenexpError("mean_teacher was used before setup(model, ...) created its teacher")
        return self.teacher

    def frozen_modules(self, model: GenexpModel) -> tuple[GenexpModel, ...]:
        # The teacher runs in the student's train/eval mode: set before the step freezes it.
        return (self._teacher().train(model.training),)

    def regularizer(self, model: GenexpModel, batch: Batch,
                    labelled: LabelledPass) -> tuple[list[Tensor], dict[str, Tensor]]:
        teacher = self._teacher()
        x_u, mask_u = unlabelled_inputs(batch, self.include_labeled)
        s = view(model, x_u, mask_u)
        student = s.forward(add_noise(s.h, sigma=self.sigma, mask=s.pmask, generator=batch.generator))
        with torch.no_grad():
            t = view(teacher, x_u, mask_u)
            target = t.forward(add_noise(t.h, sigma=self.sigma, mask=t.pmask, generator=batch.generator))
        cons = softmax_mse(student, target)
        w = self.weight * sigmoid_rampup(batch.step, self.rampup_steps)
        return [w * cons], {"consistency": cons.detach()}

    def decay(self, step: int) -> float:
        """EMA decay after the optimizer step of `batch.step == step` (step + 1 steps done)."""
        return min(1.0 - 1.0 / (step + 2), self.ema_decay)

    def after_step(self, model: GenexpModel, batch: Batch) -> None:
        ema_update(self._teacher(), model, self.decay(batch.step))

    def eval_model(self, model: GenexpModel) -> GenexpModel | None:
        return self._teacher() if self.eval_teacher else None

    def state_dict(self) -> dict:
        return {} if self.teacher is None else {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "teacher" not in state:
            return
        if self.teacher is None:
            self._pending = state["teacher"]
        else:
            self.teacher.load_state_dict(state["teacher"])
