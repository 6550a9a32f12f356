"""Saving a run's state: the checkpoint a resume continues from exactly, and best.pt, the
best-validation weights (what the reported test_acc was measured on)."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from genexp.runs.files import atomic_write
from genexp.train import distributed
from genexp.train.checkpoint import rng_state, run_id, save_checkpoint
from genexp.train.session import Loop, Session

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  # the best-validation weights: what the reported test_acc was measured on


class Diverged(RuntimeError):
    pass


def save(s: Session, loop: Loop, done: int) -> None:
    """Checkpoint after step `done` (rank 0 writes; every rank's sampler position is gathered)."""
    if "loss" in loop.sums:  # never save a diverged state
        total = distributed.all_sum(loop.sums["loss"].detach().reshape(()), s.d)
        if not math.isfinite(total.item()):
            raise Diverged(f"loss became non-finite by step {done}; lower optim.lr or the method's weight")
    per_rank = [s.run.source.state_dict()]
    if s.d.enabled:
        per_rank = [None] * s.d.world
        torch.distributed.all_gather_object(per_rank, s.run.source.state_dict())
    if s.d.is_main:
        save_checkpoint(s.run_dir / CHECKPOINT, {
            "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(), "ema": s.ema.state_dict() if s.ema is not None else None,
            "method": s.method.state_dict(), "batches": per_rank, "rng": rng_state(),
            "loop": loop.state_dict(step=done, wall_before=loop.wall_before + time.time() - s.started),
            "config": OmegaConf.to_container(s.cfg, resolve=True), "run_id": run_id(s.cfg)})


def save_best(s: Session, loop: Loop, model: torch.nn.Module) -> None:
    """best.pt: the evaluated weights at a new best validation (rank 0), written atomically and
    loadable with torch.load(weights_only=True). Keys without torch.compile's `_orig_mod.`, so that
    they load into a model built without compile=true."""
    if not s.d.is_main:
        return
    weights = {k.replace("_orig_mod.", ""): v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    loop.best_weights = {"model": weights, "step": loop.best["step"], "val_acc": loop.best["val_acc"],
                         "test_acc": loop.best["test_acc"], "run_id": run_id(s.cfg)}
    write_best(s.run_dir, loop.best_weights)


def write_best(run_dir: Path, best: dict) -> None:
    atomic_write(run_dir / BEST, lambda f: torch.save(best, f))
