"""Endless shuffled index streams over a pool, drawn from their own generator (resumable)."""
from __future__ import annotations

import torch
from torch import Tensor


class IndexStream:
    """Yields batches of pool positions, reshuffling after each pass: every example is seen once
    per epoch of the pool. Sampling happens on the CPU so it is bit-identical on every device."""

    def __init__(self, pool: Tensor, batch_size: int, seed: int) -> None:
        self.pool = pool
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self) -> Tensor:
        parts, need = [], self.batch_size
        while need > 0:
            if self.pos >= len(self.order):
                self.order = self.pool[torch.randperm(len(self.pool), generator=self.generator)]
                self.pos = 0
            take = self.order[self.pos: self.pos + need]
            self.pos += len(take)
            need -= len(take)
            parts.append(take)
        return torch.cat(parts)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.pos = state["order"], int(state["pos"])
