"""The run record, one schema for its writer (the trainer, the run-dir policy) and its readers
(`genexp table`, `genexp plot`): result.json's status values, reading a record, metrics.jsonl,
the versions and commit a record carries."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

RESULT = "result.json"
METRICS = "metrics.jsonl"


class Status:
    """result.json's `status`."""

    RUNNING = "running"  # started, or killed before it could say otherwise
    COMPLETED = "completed"
    FAILED = "failed"  # with `reason`
    INTERRUPTED = "interrupted"  # with `step` and `signal` (resumable)
    UNREADABLE = "unreadable"  # never written: a reader's mark for a result.json it cannot parse


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result.json as a dict, or None when it is missing or not a JSON object."""
    try:
        record = json.loads((run_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_run_record(record: dict[str, Any]) -> bool:
    """A result.json written by `genexp train`: every one holds a status of its own and names its
    dataset, model and method from the start. Another tool's result.json (or an unreadable one) does not."""
    return (record.get("status") in (Status.RUNNING, Status.COMPLETED, Status.FAILED, Status.INTERRUPTED)
            and all(isinstance(record.get(k), str) for k in ("dataset", "model", "method")))


def append_jsonl(path: Path, obj: dict) -> None:
    """Append one line; if the write fails (a full disk), cut the file back to where it was, so a
    half line never makes the file unreadable for a resume."""
    line = (json.dumps(obj, default=float) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("genexp", "torch", "torchvision", "numpy", "hydra-core", "transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
