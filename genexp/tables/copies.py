"""One run found twice under the dirs of a table (a copied run dir, or a rerun of one config and
seed into another dir) is one run: counted once, never as two seeds agreeing to ± 0.00.

A run is named by its `run_id` (genexp.train.checkpoint.run_id: a hash of the resolved config
without how it was run: device, threads, progress, checkpointing), read from result.json where the
run recorded it, else computed from its config.yaml. Runs without either are never merged.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from genexp.runs.config_keys import as_today
from genexp.runs.record import Status
from genexp.tables.run import Run

# result.json fields two copies of one run always share: only runs agreeing in all of them can be
# copies, so a table without copies never hashes a config (nor imports torch to do so).
_SAME_IN_COPIES = ("dataset", "model", "method", "labels", "steps", "seed", "split_seed")
# Which copy counts: one that finished beats one that failed, which beats one still running or cut off.
_STATUS_RANK = {Status.COMPLETED: 0, Status.FAILED: 1}


def run_id_of(r: Run) -> str | None:
    """The run's run_id: recorded in result.json, else the hash of its config.yaml; None without either."""
    if isinstance(r.get("run_id"), str):
        return r.get("run_id")
    import yaml

    try:
        config = yaml.safe_load((Path(r.path) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(config, dict):
        return None
    from genexp.train.checkpoint import run_id

    # as a config composed today reads it: a rerun today of a run recorded before keys were added is the same run
    return run_id(as_today(config))


def drop_copies(results: list[Run]) -> tuple[list[Run], list[str]]:
    """The runs with every copy of a run but one left out (the completed one, else the first by
    path); and a note per run found more than once, naming the dirs left out."""
    candidates: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(results):
        if r.readable:
            candidates[tuple(str(r.get(k)) for k in _SAME_IN_COPIES)].append(i)
    dropped: set[int] = set()
    notes = []
    for idx in candidates.values():
        if len(idx) < 2:
            continue
        by_id: dict[str, list[int]] = defaultdict(list)
        for i in idx:
            if (rid := run_id_of(results[i])) is not None:
                by_id[rid].append(i)
        for rid, same in by_id.items():
            if len(same) < 2:
                continue
            kept = min(same, key=lambda i: (_STATUS_RANK.get(results[i].status, 2), results[i].path))
            left = [results[i].path for i in same if i != kept]
            dropped.update(i for i in same if i != kept)
            notes.append(f"{results[kept].path} is also in {', '.join(left)} (the same run, run_id {rid}): "
                         f"counted once")
    return [r for i, r in enumerate(results) if i not in dropped], notes
