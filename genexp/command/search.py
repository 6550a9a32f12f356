"""A search: a sweep whose sweeper picks settings by what the jobs return (Optuna, Nevergrad, Ax),
as against a grid (Hydra's basic sweeper), which runs every combination it is given.

A search picks by validation accuracy, so nothing its trials print shows test accuracy (result.json
and metrics.jsonl still hold it): no one can pick by test either. Its last line is the command that
reruns the best setting over seeds, the numbers to report, with `hydra/sweeper=basic`: so a search
preset keeps its sweeper's settings in the hydra/sweeper group (hydra/sweeper/vat_search.yaml),
which that override replaces whole (settings under `hydra.sweeper:` in the preset itself would not
compose with the basic sweeper).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

# How the _target_ of Hydra's grid sweeper (hydra/sweeper=basic) ends: its module is in Hydra's private
# package, whose path a release may change.
BASIC_SWEEPER = ".basic_sweeper.BasicSweeper"
RERUN_SEEDS = "0,1,2,3,4"
RESULTS_FILE = "optimization_results.yaml"  # what Optuna's and Nevergrad's sweepers write at the end


def is_search(hydra_cfg: DictConfig) -> bool:
    """Whether the sweep this Hydra config runs is a search (anything but a grid)."""
    return not str(hydra_cfg.sweeper.get("_target_", "")).endswith(BASIC_SWEEPER)


def best_setting(sweep_dir: Path) -> tuple[dict[str, Any], float | None] | None:
    """The best setting the search wrote to its sweep dir and its validation accuracy (None when
    the sweeper does not write it), or None: none written, or several (a Pareto front)."""
    try:
        results = yaml.safe_load((sweep_dir / RESULTS_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(results, dict):
        return None
    best = results.get("best_params", results.get("best_evaluated_params"))
    value = results.get("best_value", results.get("best_evaluated_result"))
    if not isinstance(best, dict) or not best:
        return None
    return best, value if isinstance(value, (int, float)) else None


def rerun_command(args: list[str], best: dict[str, Any]) -> str:
    """`genexp train -m` with the search's own arguments `args`, the sweeper's settings and search
    space replaced by the `best` values, over seeds RERUN_SEEDS, in a new sweep dir."""
    def key(arg: str) -> str:
        return arg.split("=", 1)[0].lstrip("+~")

    dropped = {"seed", "resume", "hydra.sweep.dir", "hydra/sweeper", "hydra.output_subdir", *best}
    kept = [a for a in args if a not in ("-m", "--multirun") and key(a) not in dropped
            and not key(a).startswith("hydra.sweeper.")]
    chosen = [f"{k}={v}" for k, v in best.items() if k != "seed"]  # as the sweeper wrote its overrides
    return shlex.join(["genexp", "train", "-m", *kept, "hydra/sweeper=basic", *chosen, f"seed={RERUN_SEEDS}"])
