"""A rich progress bar with live loss and accuracies (quiet when disabled or not on a terminal)."""
from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total: int, enabled: bool = True, start: int = 0, label: str = "train") -> None:
        console = Console(stderr=True)
        self.enabled = enabled and console.is_terminal
        self.progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                                 disable=not self.enabled)
        self.task = self.progress.add_task(label, total=total, completed=start, info="")

    def tick(self, step: int) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=step)

    def update(self, step: int, **values: float) -> None:
        info = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        self.progress.update(self.task, completed=step, info=info)

    def __enter__(self) -> "TrainProgress":
        self.progress.start()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()
