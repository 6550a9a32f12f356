"""Aggregation for `genexp table`: read run records, group runs into cells, mean ± std per cell.

A cell holds the runs that agree on every key but the seed (`differing_keys` finds the keys that
would mix experiments). Rendering is in render, the command in table.
"""
from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genexp.errors import GenexpError
from genexp.runs.config_keys import as_today
from genexp.runs.record import RESULT, Status, read_record
from genexp.tables.run import Run

# Keys that make runs different experiments, from result.json (runs without config.yaml too).
IDENTITY_KEYS = ("dataset", "model", "method", "labels", "steps", "data_fingerprint")
# Resolved-config keys that say how a run ran, not what it is: runs may differ in them (and in
# the seed) and still share a cell. Every other key of config.yaml must agree within a cell.
HOW_TO_RUN_KEYS = {"seed", "progress", "device", "cpu_threads", "resume", "checkpoint_every", "log_every", "compile",
                   "tag", "experiment_name", "logger"}
UNSET = "?"  # field_value of a key a run does not have (none has no method.eps): shown as "—", never as itself
PERCENT_METRICS = {"test_acc", "val_acc", "test_acc_final", "val_acc_final", "train_acc_final"}


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metric:
    """What a cell summarises: `name` as shown, read from result key `key`."""

    name: str
    key: str
    percent: bool
    complement: bool  # value = 100 − 100·key (error rates from accuracies)
    higher_is_better: bool

    @property
    def unit(self) -> str:
        return " (%)" if self.percent else ""

    @property
    def best_word(self) -> str:
        return "max" if self.higher_is_better else "min"

    def value(self, r: Run) -> float | None:
        v = r.get(self.key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        if self.complement:
            return 100.0 - 100.0 * v
        return 100.0 * v if self.percent else float(v)


def parse_metric(name: str, best: str = "auto") -> Metric:
    err = "_err" in name
    key = name.replace("_err", "_acc", 1) if err else name
    percent = err or key in PERCENT_METRICS or key.endswith("_acc") or "_acc_" in key
    if best == "auto":
        # Loss terms recorded from training (train_sup_final, train_vat_final, ...) are better lower.
        lower = err or any(w in name for w in ("loss", "time")) or name.endswith(("_ms", "_s")) \
            or (name.startswith("train_") and not percent)
        higher = not lower
    else:
        higher = best == "max"
    return Metric(name, key, percent, err, higher)


# --------------------------------------------------------------------------- results


def load_results(dirs: list[Path]) -> list[Run]:
    """Every run under `dirs`, in path order; a result.json that cannot be read is a Run without a record."""
    results = []
    for d in dirs:
        if not d.exists():
            raise GenexpError(f"{d} does not exist: pass run or sweep directories (default outputs/)")
        if not d.is_dir():
            raise GenexpError(f"{d} is not a directory: pass run or sweep directories (default outputs/)")
        for path in sorted(d.rglob(RESULT)):
            record = read_record(path.parent)
            config = {} if record is None else _flat_config(path.parent / "config.yaml")
            results.append(Run(str(path.parent), record, config))
    return results


def _flatten(node: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(node, dict) and node:
        for k, v in node.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(node, dict):
        # An empty node sets nothing (a preset's method_settings: {} only chose its method_preset files,
        # whose keys are recorded where they land): it must not tell its runs from others.
        return
    else:
        out[prefix] = node if isinstance(node, str) else json.dumps(node)


def _flat_config(path: Path) -> dict[str, str]:
    """The run's resolved config.yaml as dotted keys (optim.lr, method.eps, dataset.path): {} if none.

    A config recorded before keys were added reads as today's (runs.config_keys.as_today): an added
    key it lacks at the value the run ran with, so old and new runs of one experiment share a cell."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    out: dict[str, str] = {}
    if isinstance(data, dict):
        _flatten(as_today(data), "", out)
    return out


def field_value(r: Run, key: str) -> str:
    """A run's value for a table key: a result.json key, else any resolved config key."""
    if r.has(key):
        return str(r.get(key))
    return r.config.get(key, UNSET)


def has_key(r: Run, key: str) -> bool:
    return r.has(key) or key in r.config


def differing_keys(results: list[Run], keys: list[str]) -> list[str]:
    """Keys (beyond `keys` and the seed) in which runs grouped into one cell by `keys` differ.

    Adding them to the keys leaves every cell with runs that agree on everything but the seed.
    A group's `name` key is reported as the group (method.name -> method) and, when the group
    differs, its other keys are left to the regrouped pass.
    """
    readable = [r for r in results if r.readable]
    extra: list[str] = []
    for pass_ in ("identity", "config"):
        cells: dict[tuple, list[Run]] = defaultdict(list)
        for r in readable:
            cells[tuple(field_value(r, k) for k in keys + extra)].append(r)
        found: set[str] = set()
        for runs in cells.values():
            if len(runs) < 2:
                continue
            if pass_ == "identity":
                candidates = set(IDENTITY_KEYS)
            else:
                candidates = {k for r in runs for k in r.config}
            for k in candidates - set(keys) - set(extra) - HOW_TO_RUN_KEYS:
                if k.endswith(".name") and k[:-5] in IDENTITY_KEYS:
                    k = k[:-5]
                    if k in keys or k in extra:
                        continue
                values = {field_value(r, k) for r in runs if pass_ == "identity" and r.has(k) or
                          pass_ == "config" and r.config}
                if len(values) > 1:
                    found.add(k)
        extra += sorted(found, key=lambda k: (k.count("."), k))
    return extra


def without_copies(results: list[Run], keys: list[str]) -> list[str]:
    """`keys` without those that copy another: a key whose value, in every run that has it, is
    another kept key's (a preset's vat_eps and the method.eps it sets; optim.lr and optim.optimizer.lr).
    Of a key and its copy the earlier in `keys` stays (differing_keys puts the shallower, the one a
    user types, first). Keys that merely happen to tell the same runs apart (a search's ε, ξ and α,
    each new per trial) all stay: each is a setting of its own."""
    readable = [r for r in results if r.readable]

    def copies(k: str, of: str) -> bool:
        having = [r for r in readable if field_value(r, k) != UNSET]
        return bool(having) and all(field_value(r, k) == field_value(r, of) for r in having)

    kept = list(keys)
    for k in reversed(keys):
        if any(copies(k, other) for other in kept if other != k):
            kept.remove(k)
    return kept


def sort_key(v: str) -> tuple:
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)


def method_first(key: tuple[str, ...], names: list[str]) -> tuple:
    # The baseline (method=none) leads; everything else in natural order.
    return tuple((0 if (k == "method" and v == "none") else 1, sort_key(v)) for k, v in zip(names, key))


@dataclass
class Cell:
    """All runs of one group."""

    values: list[float] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    failed: int = 0
    incomplete: int = 0  # running, killed before the end, or result.json unreadable
    missing: int = 0  # completed, but without the metric

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def add(self, r: Run, metric: Metric) -> None:
        status = r.status
        if status == Status.COMPLETED:
            v = metric.value(r)
            if v is None:
                self.missing += 1
            else:
                self.values.append(v)
                self.seeds.append(str(r.get("seed")))
        elif status == Status.FAILED:
            self.failed += 1
        else:
            self.incomplete += 1

    def stat(self, precision: int) -> str:
        if self.mean is None:
            return "—"
        if self.std is None:
            return f"{self.mean:.{precision}f}"
        return f"{self.mean:.{precision}f} ± {self.std:.{precision}f}"

    def notes(self, metric: Metric, with_n: bool = True) -> str:
        parts = [f"n={self.n}"] if with_n else []
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.incomplete:
            parts.append(f"{self.incomplete} incomplete")
        if self.missing:
            parts.append(f"{self.missing} without {metric.key}")
        return ", ".join(parts)

    def text(self, metric: Metric, precision: int) -> str:
        return f"{self.stat(precision)} ({self.notes(metric)})"


def group(results: list[Run], keys: list[str], metric: Metric) -> dict[tuple[str, ...], Cell]:
    cells: dict[tuple[str, ...], Cell] = defaultdict(Cell)
    for r in results:
        cells[tuple(field_value(r, k) for k in keys)].add(r, metric)
    return dict(cells)


def summarise(results: list[Run], by: list[str], metric: str | Metric) -> list[dict[str, Any]]:
    """One row per group: n completed, failed/incomplete counts, mean and sample std (flat layout;
    each row's Cell is group's under the row's key values)."""
    m = parse_metric(metric) if isinstance(metric, str) else metric
    cells = group(results, by, m)
    rows = []
    for key in sorted(cells, key=lambda k: method_first(k, by)):
        c = cells[key]
        rows.append({**dict(zip(by, key)), "n": c.n, "failed": c.failed, "incomplete": c.incomplete,
                     "missing": c.missing, "mean": c.mean, "std": c.std, "seeds": ",".join(sorted(set(c.seeds)))})
    return rows


def check_keys(results: list[Run], keys: list[str], metric: Metric) -> None:
    """Raise on keys or a metric no run has."""
    readable = [r for r in results if r.readable]
    for k in keys:
        if readable and not any(has_key(r, k) for r in readable):
            known = sorted({k2 for r in readable for k2, v in r.fields.items()
                            if isinstance(v, (str, int)) and not isinstance(v, bool)})
            raise GenexpError(f"no run has the key {k!r}: group by some of {', '.join(known)}, or any key of "
                              f"the runs' config.yaml (optim.lr, method.eps, dataset.path, ...)")
    completed = [r for r in readable if r.status == Status.COMPLETED]
    if completed and not any(metric.value(r) is not None for r in completed):
        numeric = sorted({k for r in completed for k, v in r.fields.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)})
        extra = " (or test_err, val_err)" if "test_acc" in numeric else ""
        raise GenexpError(f"no completed run has a numeric {metric.key!r}: use --metric with one of "
                          f"{', '.join(numeric)}{extra}")


def unreadable_warnings(results: list[Run]) -> list[str]:
    return [f"unreadable result.json in {r.path} (counted as incomplete)" for r in results if not r.readable]


def duplicate_seeds(results: list[Run], keys: list[str], metric: Metric) -> list[str]:
    """A warning per cell with two completed runs of one seed that are not one run (copies are
    counted once before: copies.drop_copies), e.g. reruns with a changed code or no config.yaml."""
    warnings = []
    for key, c in group(results, keys, metric).items():
        dup = sorted({s for s in c.seeds if c.seeds.count(s) > 1})
        if dup and dup != ["None"]:
            name = "/".join("—" if v == UNSET else v for v in key)
            warnings.append(f"{name}: several completed runs with seed {','.join(dup)} "
                            f"(all are counted)")
    return warnings

