"""`genexp train`: the Hydra application around `trainer.train`."""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from genexp.errors import GenexpError

FAILED_JOBS: list[str] = []


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def hydra_train(cfg: DictConfig) -> float | None:
    from genexp.trainer import train

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        if (run_dir / "result.json").exists():
            raise GenexpError(f"{run_dir} already holds a run: choose another hydra.run.dir (nothing was changed)")
        return train(cfg, run_dir)["test_acc"]
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        (run_dir / "error.log").write_text(traceback.format_exc()) if run_dir.is_dir() else None
        if isinstance(e, GenexpError):
            print(f"error: {e}", file=sys.stderr)
            if not multirun:
                sys.exit(e.exit_code)
        else:
            print(f"error: run failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                  f"(traceback in {run_dir / 'error.log'})", file=sys.stderr)
            if not multirun:
                sys.exit(1)
        FAILED_JOBS.append(str(run_dir))
        return None


def main(args: list[str]) -> int:
    sys.argv = ["genexp train", *args]
    hydra_train()
    if FAILED_JOBS:
        print(f"{len(FAILED_JOBS)} run(s) failed; each has result.json with status 'failed' and a reason",
              file=sys.stderr)
        return 1
    return 0
