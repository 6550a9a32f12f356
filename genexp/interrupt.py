"""Ctrl-C (SIGINT) and SIGTERM (what Slurm sends on preemption or at the time limit).

The first signal only sets a flag: training stops at the next step boundary, saves a checkpoint
at that step, records `status: interrupted` and exits 130 (SIGINT) or 143 (SIGTERM). A second
signal stops at once (KeyboardInterrupt): resuming then continues from the last periodic
checkpoint. When a handler of our own replaced a Python handler (submitit's SIGUSR2 handler
under `hydra/launcher=slurm`), that handler is called after the checkpoint is saved, so the job
is requeued as submitit would have done.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR2")


def exit_code(signum: int) -> int:
    return 128 + signum


class Interrupted(BaseException):
    """Training stopped on a signal after saving a checkpoint at `step` (a BaseException, so that
    generic `except Exception` handlers, Hydra's among them, let it through)."""

    def __init__(self, signum: int, step: int, total: int) -> None:
        super().__init__(signum, step, total)
        self.signum, self.step, self.total = signum, step, total

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class StopOnSignal:
    """While entered, SIGINT/SIGTERM (and SIGUSR2 when a Python handler already owns it) set `signum`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: stop now, without saving
        self.signum = signum

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            prev = signal.getsignal(sig)
            if name == "SIGUSR2" and not callable(prev):
                continue  # only take SIGUSR2 over from a handler that wants it (submitit)
            self.previous[sig] = prev
            signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, prev in self.previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self.previous = {}

    def chain(self, signum: int) -> None:
        """Hand a signal we took over from a Python handler (not SIGINT's default) back to it."""
        prev = self.previous.get(signum)
        if callable(prev) and prev is not signal.default_int_handler:
            prev(signum, None)
