"""`compile`: the method's whole loss (every forward of the step and, through AOTAutograd, its
backward) compiled by torch.compile into one graph per run.

What makes it one graph: the method draws its random numbers before the loss (`Method.draw`),
the loss gets only tensors (no step count or generator to specialise on), and the batch sizes
are constant (`BatchSource` never yields a partial batch). A step the method cannot trace
(`Method.compiles` false: text masks, warm-start buffers, dropout to replay) runs eagerly.

`compile=auto` compiles where it pays: a method that compiles, on a run long enough to win back
the compilation (MIN_RUN_FLOPS forward FLOPs over the run; docs/RESULTS.md, "A compiled step").
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from genexp.errors import GenexpError
from genexp.methods.base import Batch, Method, StepOutput
from genexp.models.base import GenexpModel

log = logging.getLogger("genexp")
LossFn = Callable[[GenexpModel, Batch], StepOutput]
# Forward FLOPs over the whole run (steps x the step's rows) above which compile=auto compiles.
MIN_RUN_FLOPS = 1e12


class CompiledLoss:
    """`method.loss` compiled once; calls with the method's draws made ahead."""

    def __init__(self, method: Method) -> None:
        self.method = method
        self.fn = torch.compile(method.loss, dynamic=False)
        self.eager_steps = 0

    def __call__(self, model: GenexpModel, batch: Batch) -> StepOutput:
        if not self.method.compiles(model, batch):
            self.eager_steps += 1
            return self.method.loss(model, batch)
        return self.fn(model, self.method.draw(model, batch))


def check_compile(value: Any) -> None:
    if not (isinstance(value, bool) or value == "auto"):
        raise GenexpError(f"compile={value!r} is not a compile mode: use compile=auto, compile=true or compile=false")


def wants_compile(value: Any, method: Method, model: GenexpModel, batch: Batch, run_flops: float | None) -> tuple[bool, str]:
    """(compile?, why) for `compile` = true | false | auto."""
    check_compile(value)
    if value is False:
        return False, "compile=false"
    if not method.compiles(model, batch):
        return False, f"{type(method).__name__} on this model and data cannot be compiled whole: eager"
    if value is True:
        return True, "compile=true"
    if run_flops is None or run_flops < MIN_RUN_FLOPS:
        shown = "unknown" if run_flops is None else f"{run_flops:.2g}"
        return False, (f"compile=auto: a short run ({shown} forward FLOPs < {MIN_RUN_FLOPS:.0e}) would not win back "
                       f"the compilation")
    return True, f"compile=auto: a long run ({run_flops:.2g} forward FLOPs)"


def step_loss(value: Any, method: Method, model: GenexpModel, batch: Batch, run_flops: float | None
              ) -> tuple[LossFn, str]:
    """The loss function the loop calls each step, and why it is (not) compiled."""
    compile_it, why = wants_compile(value, method, model, batch, run_flops)
    return (CompiledLoss(method) if compile_it else method.loss), why
