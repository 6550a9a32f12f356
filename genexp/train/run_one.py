"""One run from Python (a notebook, another tool), without Hydra or the command line: a complete
config (a dict or an OmegaConf object, e.g. `genexp train ... --cfg job > run.yaml` loaded with
OmegaConf.load, or a run dir's config.yaml) trained into a new run dir and recorded there as
`genexp train` records it; the result record comes back."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genexp.errors import GenexpError
from genexp.runs.record import RunRecord
from genexp.train.loop import train
from genexp.train.method_overrides import apply_method_overrides


def run(cfg: Mapping[str, Any] | DictConfig, run_dir: str | Path) -> RunRecord:
    """Train `cfg` into `run_dir` (new, or an empty dir) and return its record (result.json).

    The config is copied (yours is left as it is); an experiment preset's `method_overrides` are
    merged as the command merges them. Bad values raise GenexpError with the command's one-line
    message; a failure while training is recorded (status failed) and raised."""
    if not isinstance(cfg, (Mapping, DictConfig)):
        raise GenexpError(f"run() takes a config (a dict or an OmegaConf DictConfig), got {type(cfg).__name__}")
    cfg = OmegaConf.create(OmegaConf.to_container(cfg) if isinstance(cfg, DictConfig) else dict(cfg))
    run_dir = Path(run_dir)
    if run_dir.is_file() or (run_dir.is_dir() and any(run_dir.iterdir())):
        raise GenexpError(f"{run_dir} is not empty: pass a new run dir (resuming a run is `genexp train resume=<dir>`)")
    return train(apply_method_overrides(cfg), run_dir)
