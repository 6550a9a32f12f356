"""The trainer: one run from a config, without Hydra (`run`, below, and `loop.train`), with what it
builds (build, setup, session), the loop and its batches, checkpoints, evaluation, records
(outcome), trackers, threads, signals (interrupt) and distributed helpers. The command around it,
`genexp train` with its run-dir policy and sweeps, is genexp.command."""
from typing import Any

__all__ = ["run"]


def __getattr__(name: str) -> Any:
    # Imported when asked for: `genexp table` reads genexp.train.checkpoint without the loop's imports.
    if name == "run":
        from genexp.train.run_one import run

        return run
    raise AttributeError(f"module 'genexp.train' has no attribute {name!r}")
