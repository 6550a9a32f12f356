"""`cpu_threads=auto`: how many intra-op threads a CPU run gets, decided once per run.

The decision is a rule, not a timing: the thread count changes the last bits of reductions, so a
choice made by timing a few steps would make a run's numbers depend on the machine's load at
start. The rule (benchmarks in docs/RESULTS.md, "How many CPU threads"):

- jobs that share the machine split its cores: a parallel Hydra launcher's jobs (joblib
  `n_jobs`, submitit_local), named by the sweep callback in GENEXP_PARALLEL_JOBS, and torchrun's
  local ranks (LOCAL_WORLD_SIZE);
- a run's share goes to one thread when its step is small (under MIN_FLOPS_FOR_THREADS forward
  FLOPs per step): small ops gain nothing from more threads and lose to their synchronisation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

PARALLEL_ENV = "GENEXP_PARALLEL_JOBS"
# Forward FLOPs per training step (labelled + unlabelled rows) from which a lone run takes every core:
# the smallest step measured (3.2e7, the digits MLP) was already 1.36x faster on 2 cores than on 1
# (scripts/thread_rule.py, docs/RESULTS.md); below 1e7 nothing was measured.
MIN_FLOPS_FOR_THREADS = 1e7


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def jobs_side_by_side() -> int:
    """Processes of this launch sharing the machine's cores: parallel sweep jobs x local ranks."""
    def count(name: str) -> int:
        try:
            return max(1, int(os.environ.get(name, "1")))
        except ValueError:
            return 1
    return count(PARALLEL_ENV) * count("LOCAL_WORLD_SIZE")


def launcher_parallelism(launcher: Any, cores: int | None = None) -> int:
    """How many jobs a Hydra launcher config (`hydra.launcher`) runs at once on this machine."""
    cores = cores or usable_cores()
    target = str(launcher.get("_target_", "")) if launcher is not None else ""
    if target.endswith("JoblibLauncher"):
        n_jobs = launcher.get("n_jobs")
        if n_jobs is None or n_jobs == 0:
            return 1
        n = n_jobs if n_jobs > 0 else cores + 1 + n_jobs  # joblib: -1 = all cores, -2 = all but one
        return max(1, n)
    if target.endswith("LocalLauncher") and "submitit" in target:
        return max(1, int(launcher.get("array_parallelism") or cores))
    return 1  # the basic launcher runs jobs one after another; cluster launchers, on other machines


def forward_flops(model: torch.nn.Module, x: Tensor, mask: Tensor | None = None) -> float:
    """FLOPs of one forward pass per example, counted by torch on two examples in eval mode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x[:2], None if mask is None else mask[:2])
    finally:
        model.train(was_training)
    return counter.get_total_flops() / max(1, min(2, len(x)))


def choose_threads(requested: Any, device: torch.device, step_flops: float | None) -> ThreadChoice:
    """`cpu_threads` resolved: an int as given; auto as the module docstring's rule."""
    if requested not in (None, "auto"):
        return ThreadChoice(int(requested), "cpu_threads set")
    if device.type != "cpu":
        return ThreadChoice(torch.get_num_threads(), f"{device.type} run: torch's default")
    cores, jobs = usable_cores(), jobs_side_by_side()
    share = max(1, cores // jobs)
    split = f"{cores} cores / {jobs} jobs side by side" if jobs > 1 else f"{cores} cores, a lone run"
    if share == 1:
        return ThreadChoice(1, split)
    if step_flops is not None and step_flops < MIN_FLOPS_FOR_THREADS:
        return ThreadChoice(1, f"{split}, but a small step ({step_flops:.2g} forward FLOPs < "
                               f"{MIN_FLOPS_FOR_THREADS:.0e}): one thread is faster")
    return ThreadChoice(share, split)


def apply_threads(choice: ThreadChoice) -> ThreadChoice:
    torch.set_num_threads(choice.threads)
    return choice
