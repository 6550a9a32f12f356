"""Weight ramps: how a regularizer's weight grows over the first training steps."""
from __future__ import annotations

import math


def linear_rampup(step: int, rampup_steps: int) -> float:
    """min(1, step / rampup_steps); 1 when rampup_steps is 0."""
    if rampup_steps <= 0:
        return 1.0
    return min(1.0, step / rampup_steps)


def sigmoid_rampup(step: int, rampup_steps: int) -> float:
    """exp(−5 (1 − t)²), t = min(1, step / rampup_steps) (Laine & Aila 2017; Tarvainen & Valpola 2017)."""
    if rampup_steps <= 0:
        return 1.0
    t = min(1.0, max(0.0, step / rampup_steps))
    return math.exp(-5.0 * (1.0 - t) ** 2)
