"""Replaying the random draws of a forward pass (dropout masks, hidden-layer noise).

VAT's power iteration estimates the dominant direction of KL(p(x) ‖ p(x + ξd)) from the change
of the logits at a tiny ξ. If the probe pass draws fresh dropout masks or noise, that change is
mostly the difference between two noise samples, not the effect of ξd, and the "adversarial"
direction becomes noise-driven. Replaying the clean pass's random state makes the probe see the
same masks, so the finite difference measures ξd alone.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class RngReplay:
    """Captures the global RNG state (CPU, and the device's when it is CUDA) at construction;
    `replay()` runs its block from that state and then restores the state it found."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.index = device.index if device.index is not None else (torch.cuda.current_device() if self.cuda else None)
        self.state = self._get()

    def _get(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.get_rng_state(), torch.cuda.get_rng_state(self.index) if self.cuda else None

    def _set(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if self.cuda:
            torch.cuda.set_rng_state(state[1], self.index)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        found = self._get()
        self._set(self.state)
        try:
            yield
        finally:
            self._set(found)
