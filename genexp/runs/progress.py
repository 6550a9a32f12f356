"""A rich progress bar with live loss and accuracies (quiet when disabled or not on a terminal).

One line at any terminal width: on narrow terminals (under 100 columns) the bar shrinks and the
live values use short names. Evaluation of large sets shows its own progress on the same line.
"""
from __future__ import annotations

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

    def __enter__(self) -> "TrainProgress":
        self.progress.start()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()
