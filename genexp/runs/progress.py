"""A rich progress bar with live loss and accuracies (quiet when disabled or not on a terminal),
and the log lines that stand in for it where no one watches a terminal.

One line at any terminal width: on narrow terminals (under 100 columns) the bar shrinks and the
live values use short names. Evaluation of large sets shows its own progress on the same line.

`TrainProgress.note` writes a progress line through logging: to every handler (console and
genexp.log) when the bar is off (output redirected: nohup, Slurm, a pipe; or progress=false), to
the log files only while the bar shows, so that a terminal never shows both. `Pace` turns the
measured rate into elapsed / time-left text; `Every` says when a long loop is due a line.
"""
from __future__ import annotations

import logging
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

SHORT = {"loss": "loss", "train_acc": "tr", "val_acc": "val", "test_acc": "test"}


class TrainProgress:
    def __init__(self, total: int, enabled: bool = True, start: int = 0, label: str = "train",
                 console: Console | None = None) -> None:
        console = console or Console(stderr=True)
        self.enabled = enabled and console.is_terminal
        self.narrow = console.width < 100
        bar = BarColumn(bar_width=max(8, min(40, console.width - 70)) if self.narrow else 40)
        self.progress = Progress(TextColumn(f"[bold]{label}"), bar, MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(compact=self.narrow), TextColumn("{task.fields[info]}"),
                                 console=console, disable=not self.enabled, expand=False)
        self.task = self.progress.add_task(label, total=total, completed=start, info="")
        self.info = ""

    def tick(self, step: int) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=step)

    def update(self, step: int, **values: float) -> None:
        if self.narrow:
            parts = [f"{SHORT.get(k, k)} {v:.3f}" if k == "loss" else f"{SHORT.get(k, k)} {100 * v:.1f}"
                     for k, v in values.items() if k != "train_acc"]
        else:
            parts = [f"{k} {v:.4f}" for k, v in values.items()]
        self.info = " ".join(parts)
        self.progress.update(self.task, completed=step, info=self.info)

    def evaluating(self, name: str, done: int, total: int) -> None:
        """Progress through an evaluation set (shown in place of the live values while it runs)."""
        if self.enabled:
            self.progress.update(self.task, info=f"eval {name} {done}/{total}")

    def note(self, logger: logging.Logger, msg: str, *args: object) -> None:
        """Log an INFO progress line: to every handler without the bar; with it, to every handler
        but those writing to a terminal, where the bar already shows it (genexp.log, and stdout
        when only stdout is redirected, still get it)."""
        if not self.enabled:
            logger.info(msg, *args)
            return
        if not logger.isEnabledFor(logging.INFO):
            return
        record = logger.makeRecord(logger.name, logging.INFO, "(progress)", 0, msg, args, None)
        for handler in _handlers(logger):
            if record.levelno >= handler.level and not _to_terminal(handler):
                handler.handle(record)

    def __enter__(self) -> "TrainProgress":
        self.progress.start()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()


def _handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers a record logged on `logger` reaches (its own and its ancestors' while propagating)."""
    found: list[logging.Handler] = []
    node: logging.Logger | None = logger
    while node is not None:
        found += node.handlers
        node = node.parent if node.propagate else None
    return found


def _to_terminal(handler: logging.Handler) -> bool:
    if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
        return False
    isatty = getattr(handler.stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s: short enough for a log line, exact enough to plan by."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Pace:
    """Elapsed time and time left from the rate measured since `start` (work done before it, as a
    resumed run's earlier steps, counts in elapsed through `before_s` but not in the rate)."""

    def __init__(self, total: int, start: int = 0, before_s: float = 0.0, unit: str = "steps") -> None:
        self.total, self.start, self.before_s, self.unit = total, start, before_s, unit
        self.t0 = time.perf_counter()

    def text(self, done: int) -> str:
        spent = time.perf_counter() - self.t0
        rate = (done - self.start) / spent if spent > 0 and done > self.start else 0.0
        left = duration((self.total - done) / rate) if rate > 0 else "?"
        return f"elapsed {duration(self.before_s + spent)}, left {left} ({rate:.3g} {self.unit}/s)"


class Every:
    """Whether a loop at `done` of `total` is due a progress line: each `fraction` of the total, or
    after `seconds` without one, whichever comes first (a slow loop still shows it is alive)."""

    def __init__(self, total: int, fraction: float = 0.1, seconds: float = 30.0) -> None:
        self.stride = max(1.0, total * fraction)
        self.seconds = seconds
        self.next_at = self.stride
        self.last = time.perf_counter()

    def due(self, done: int) -> bool:
        now = time.perf_counter()
        if done < self.next_at and now - self.last < self.seconds:
            return False
        while self.next_at <= done:
            self.next_at += self.stride
        self.last = now
        return True
