"""The train-step contract every method implements (one file + one config per method).

The trainer draws a labelled batch (and an unlabelled one when `uses_unlabeled`), calls
`method.loss(model, batch)`, and back-propagates the returned loss. Nothing else in the
trainer knows which method runs: a new method is a subclass here plus `configs/method/x.yaml`
whose `_target_` names it.

Where the math lives — one rule:
- The math is in `genexp.regularizers`: perturbations, penalties, consistency and pseudo-label
  terms, as functions of a `forward` (input → logits) and tensors. A method composes them: it
  picks the batch and the view (`methods.views`), the weights and ramps, and keeps per-run
  state (a teacher, a buffer). A formula written inside a method file belongs in regularizers/.
- BatchNorm running statistics are decided here, once per step, and nowhere else: `Method.loss`
  runs the supervised pass (`labelled_pass`) with live statistics, then the method's
  `regularizer` — every other pass of the step — inside ONE
  `frozen_bn_stats(model, *self.frozen_modules(model))`. A method whose regularizer reuses the
  supervised pass (FGM perturbs its embedding, gp_param differentiates its loss) overrides
  `labelled_pass` and reads it in `regularizer`; it does not freeze anything itself. Two methods
  override `loss` and say why: `noise` (no clean pass: its noisy passes are the training passes)
  and `vat`'s fused pass (no BatchNorm couples its rows, so there is nothing to freeze).
  Regularizer functions never freeze a module their caller has frozen: a method calls them
  without `model`; called on their own with `model` (or a module as `forward`), they freeze it
  themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from genexp.errors import GenexpError
from genexp.models.base import GenexpModel
from genexp.models.batchnorm import frozen_bn_stats
from genexp.regularizers.divergence import ce


@dataclass
class Batch:
    x_l: Tensor
    y_l: Tensor
    mask_l: Tensor | None = None
    x_u: Tensor | None = None
    mask_u: Tensor | None = None
    idx_l: Tensor | None = None  # positions in the training set (for per-example buffers)
    idx_u: Tensor | None = None
    step: int = 0
    generator: torch.Generator | None = None
    # Views of the unlabelled rows a method asked for (`Method.views`: weak, strong, plain), by name.
    u_views: dict[str, Tensor] = field(default_factory=dict)
    # The method's random draws made ahead of its loss (`Method.draw`): what a compiled step passes
    # in, since a graph cannot draw from `generator`.
    noise_u: Tensor | None = None


@dataclass
class StepOutput:
    loss: Tensor
    logits_l: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class LabelledPass:
    """The supervised pass of a step (BatchNorm statistics move in it): its cross-entropy and logits,
    and what a regularizer reuses from it: the perturbable `view` it went through (FGM) or the
    random state captured just before it (`replay`, for a second pass with the same dropout masks)."""

    loss: Tensor
    logits: Tensor
    view: Any = None
    replay: Any = None


class Method:
    """Supervised cross-entropy; subclasses add their regularizer to it (`regularizer`)."""

    uses_unlabeled: ClassVar[bool] = False
    text_only: ClassVar[bool] = False
    # Views of the unlabelled batch the method needs (genexp.data.views: "weak", "strong", "plain");
    # empty: the plain unlabelled input in `Batch.x_u`.
    views: ClassVar[tuple[str, ...]] = ()

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        self.weight = weight
        self.label_smoothing = label_smoothing
        self.check(weight=weight, label_smoothing=label_smoothing)

    @staticmethod
    def check(**values: float) -> None:
        """Reject negative hyperparameters with a line naming the key (`method.<key>`)."""
        for key, value in values.items():
            if value is None or value < 0:
                raise GenexpError(f"method.{key}={value} must be >= 0: set method.{key}=<non-negative number>")

    def supervised(self, model: GenexpModel, batch: Batch) -> tuple[Tensor, Tensor]:
        logits = model(batch.x_l, batch.mask_l)
        return self.cross_entropy(logits, batch.y_l), logits

    def cross_entropy(self, logits: Tensor, y: Tensor) -> Tensor:
        return ce(logits, y, self.label_smoothing)

    def labelled_pass(self, model: GenexpModel, batch: Batch) -> LabelledPass:
        """The step's supervised pass (`supervised`); BatchNorm statistics move in it."""
        return LabelledPass(*self.supervised(model, batch))

    def loss(self, model: GenexpModel, batch: Batch) -> StepOutput:
        """CE on the labelled batch (BatchNorm statistics move), then `regularizer`'s terms, all
        of its passes inside one `frozen_bn_stats`."""
        labelled = self.labelled_pass(model, batch)
        out = StepOutput(loss=labelled.loss, logits_l=labelled.logits, logs={"sup": labelled.loss.detach()})
        if type(self).regularizer is Method.regularizer:
            return out
        with frozen_bn_stats(model, *self.frozen_modules(model)):
            terms, logs = self.regularizer(model, batch, labelled)
        for term in terms:
            out.loss = out.loss + term
        out.logs.update(logs)
        return out

    def regularizer(self, model: GenexpModel, batch: Batch,
                    labelled: LabelledPass) -> tuple[list[Tensor], dict[str, Tensor]]:
        """The weighted terms added to the supervised CE, and what to log. Runs after the
        supervised pass (`labelled`), inside the step's `frozen_bn_stats`: call regularizers
        without `model`."""
        return [], {}

    def frozen_modules(self, model: GenexpModel) -> tuple[GenexpModel, ...]:
        """Modules besides the student whose BatchNorm statistics the step must not move (a teacher)."""
        return ()

    def compiles(self, model: GenexpModel, batch: Batch) -> bool:
        """Whether `loss` on `draw(model, batch)` traces into one graph (train/compiled.py): no
        draw from a generator, no per-step Python state. Supervised CE does; a method that can
        overrides `draw` and this."""
        return type(self).regularizer is Method.regularizer and type(self).loss is Method.loss

    def draw(self, model: GenexpModel, batch: Batch) -> Batch:
        """The batch with the loss's random draws made ahead, and nothing that changes from step to
        step but tensors (no step count, generator or indices: a compiled loss would recompile)."""
        return Batch(x_l=batch.x_l, y_l=batch.y_l, mask_l=batch.mask_l, x_u=batch.x_u, mask_u=batch.mask_u)

    # Optional hooks. A method with state (a teacher, a buffer) keeps it here, so checkpoints
    # and resume carry it without the trainer knowing what it is.
    def setup(self, model: GenexpModel, *, num_classes: int, num_train: int, device: torch.device,
              num_unlabeled: int | None = None) -> None:
        """Called once before training; `num_train` is the size of the indexable training set (what
        `Batch.idx_l`/`idx_u` index), `num_unlabeled` the size of the unlabelled pool in it."""

    def after_step(self, model: GenexpModel, batch: Batch) -> None:
        """Called after each optimizer step (e.g. to update an EMA teacher)."""

    def eval_model(self, model: GenexpModel) -> GenexpModel | None:
        """A model to evaluate instead of the student (e.g. a mean teacher), or None."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def check_positive_int(**values: int) -> None:
    """Reject a value that is not an integer >= 1 with a line naming the key (`method.<key>`)."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenexpError(f"method.{key}={value} must be an integer >= 1: set method.{key}=<int >= 1>")


def check_probability(**values: float) -> None:
    """Reject a value outside [0, 1] with a line naming the key (`method.<key>`)."""
    for key, value in values.items():
        if value is None or not 0.0 <= value <= 1.0:
            raise GenexpError(f"method.{key}={value} must be in [0, 1]: set method.{key}=<number in [0, 1]>")
