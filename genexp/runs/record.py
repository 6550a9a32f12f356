"""The run record, one schema for its writer (the trainer, the run-dir policy) and its readers
(`genexp table`, `genexp compare`, `genexp plot`): result.json as a RunRecord, its status values,
metrics.jsonl, the versions and commit a record carries."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from genexp.runs.files import atomic_write_json

RESULT = "result.json"
METRICS = "metrics.jsonl"


class Status:
    """result.json's `status`."""

    RUNNING = "running"  # started, or killed before it could say otherwise
    COMPLETED = "completed"
    FAILED = "failed"  # with `reason`
    INTERRUPTED = "interrupted"  # with `step` and `signal` (resumable)
    UNREADABLE = "unreadable"  # never written: a reader's mark for a result.json it cannot parse


# result.json is flat; its keys fall into the groups below. A field is None both when the record
# holds null and when it lacks the key (a record of an earlier version, or of a run that stopped
# before the key was known): RunRecord.held tells the two apart, so a record reads back as written.


@dataclass(frozen=True)
class Identity:
    """What the run is: tables group and pair runs by these (with config.yaml's keys)."""

    dataset: str | None = None
    model: str | None = None
    method: str | None = None
    labels: int | None = None
    seed: int | None = None
    split_seed: int | str | None = None  # an int, or per_seed
    split_seed_drawn: int | None = None  # split_seed=per_seed's draw (absent before it existed)
    steps: int | None = None
    experiment: str | None = None
    tag: str | None = None
    run_dir: str | None = None
    data_fingerprint: str | None = None  # known once the data is built (absent in a run that failed before)


@dataclass(frozen=True)
class Outcome:
    """How a run that did not complete stopped: `reason` (failed, interrupted), and for a signal
    that saved a checkpoint, the step it stopped at."""

    reason: str | None = None
    step: int | None = None
    signal: str | None = None
    checkpoint_step: int | None = None


@dataclass(frozen=True)
class Metrics:
    """A completed run's numbers: best-validation and final accuracies, the method's training
    terms over the last interval (train_<term>_final), the split's sizes."""

    val_acc: float | None = None
    test_acc: float | None = None
    best_step: int | None = None
    selection: str | None = None  # what test_acc is: at best_val, or final (no validation set)
    val_acc_final: float | None = None
    test_acc_final: float | None = None
    train_acc_final: float | None = None
    terms_final: dict[str, float] = field(default_factory=dict)  # train_sup_final, train_vat_final, ...
    n_labeled: int | None = None
    n_unlabeled: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    n_params: int | None = None


@dataclass(frozen=True)
class Timings:
    wall_time_s: float | None = None  # every session's, a resumed run's earlier ones included
    train_time_s: float | None = None
    step_time_ms: float | None = None
    step_time_ms_median: float | None = None


@dataclass(frozen=True)
class Environment:
    """Where and with what the run ran: device, code and package versions, threads, compilation."""

    device: str | None = None
    world_size: int | None = None
    git_commit: str | None = None
    versions: dict[str, str] | None = None
    threads: int | None = None  # CPU runs only
    threads_reason: str | None = None
    compiled: str | None = None
    eager_steps: int | None = None
    # The CPU and the vector instructions torch's kernels use on it: float results (features a
    # frozen encoder caches, a run's last digits) differ between CPUs, not between runs on one.
    cpu: str | None = None


GROUPS = {"identity": Identity, "outcome": Outcome, "metrics": Metrics, "timings": Timings,
          "environment": Environment}
_GROUP_OF = {f.name: g for g, cls in GROUPS.items() for f in fields(cls) if f.name != "terms_final"}


def is_term_final(key: str) -> bool:
    """A method's training term at the end of the run (train_sup_final); train_acc_final is a metric of its own."""
    return key.startswith("train_") and key.endswith("_final") and key != "train_acc_final"


@dataclass(frozen=True)
class RunRecord(Mapping):
    """result.json of one run. Typed fields by group; `extra` keeps keys no group models (another
    version's, another tool's) so that nothing is lost. Read-only: a reader's own bookkeeping
    (a table's path, config, cell) lives beside a record, never in it. As a Mapping it is the
    flat result.json (`record["test_acc"]`, `record.get(key)`), for keys a user names."""

    status: str | None = None
    identity: Identity = field(default_factory=Identity)
    outcome: Outcome = field(default_factory=Outcome)
    metrics: Metrics = field(default_factory=Metrics)
    timings: Timings = field(default_factory=Timings)
    environment: Environment = field(default_factory=Environment)
    extra: dict[str, Any] = field(default_factory=dict)
    held: frozenset[str] = frozenset()  # the grouped keys (and status) that result.json holds

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RunRecord":
        """A record as result.json holds it, of any version: a key it lacks reads None, a key no
        group models is kept in `extra`."""
        groups: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
        terms, extra = {}, {}
        for k, v in data.items():
            if k in _GROUP_OF:
                groups[_GROUP_OF[k]][k] = v
            elif is_term_final(k):
                terms[k] = v
            elif k != "status":
                extra[k] = v
        groups["metrics"]["terms_final"] = terms
        held = frozenset(k for k in data if k in _GROUP_OF or k == "status")
        return cls(data.get("status"), **{g: GROUPS[g](**kw) for g, kw in groups.items()}, extra=extra, held=held)

    def with_values(self, **values: Any) -> "RunRecord":
        """This record with `values` (result.json keys) set, each in its group: how the trainer
        writes one. A key no group models is a TypeError (a writer's typo), not an extra."""
        changed: dict[str, Any] = {}
        terms = {k: v for k, v in values.items() if is_term_final(k)}
        for k, v in values.items():
            if k == "status" or k in terms:
                continue
            if k not in _GROUP_OF:
                raise TypeError(f"result.json has no key {k!r} in its schema (genexp.runs.record)")
            g = _GROUP_OF[k]
            changed[g] = replace(changed.get(g, getattr(self, g)), **{k: v})
        if terms:
            metrics = changed.get("metrics", self.metrics)
            changed["metrics"] = replace(metrics, terms_final={**metrics.terms_final, **terms})
        status = values.get("status", self.status)
        held = self.held | {k for k in values if not is_term_final(k)}
        return replace(self, status=status, **changed, held=held)

    def to_json(self) -> dict[str, Any]:
        """The record as result.json holds it: exactly the keys it was read or written with."""
        out: dict[str, Any] = {"status": self.status} if "status" in self.held else {}
        for g in GROUPS:
            group = getattr(self, g)
            out |= {f.name: getattr(group, f.name) for f in fields(group)
                    if f.name in self.held and f.name != "terms_final"}
        return out | self.metrics.terms_final | self.extra

    def __post_init__(self) -> None:
        object.__setattr__(self, "_flat", self.to_json())  # the Mapping view, built once: tables read it often

    def __getitem__(self, key: str) -> Any:
        return self._flat[key]  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self._flat)  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # it holds dicts


def read_record(run_dir: Path) -> RunRecord | None:
    """The run's result.json, or None when it is missing or not a JSON object."""
    try:
        data = json.loads((run_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None
    return RunRecord.from_json(data) if isinstance(data, dict) else None


def write_record(run_dir: Path, record: RunRecord) -> None:
    """result.json, written whole or not at all."""
    atomic_write_json(run_dir / RESULT, record.to_json())


def is_run_record(record: Mapping[str, Any]) -> bool:
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


def cpu_name() -> str:
    """The CPU's model name and torch's kernel level on it, e.g. 'Intel(R) Xeon(R) Processor, AVX512'."""
    import torch

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {torch.backends.cpu.get_cpu_capability()}"
