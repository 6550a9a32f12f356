"""`genexp train`: the Hydra application around `trainer.train`.

Errors a user can fix (bad keys, names, paths, values) print one line and exit 2; a run that
fails while training is recorded as failed (result.json), prints one line and exits 1 — in a
sweep the other runs go on. GENEXP_TRACEBACK=1 (or HYDRA_FULL_ERROR=1) shows tracebacks.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from genexp import distributed
from genexp.errors import GenexpError

FAILED_JOBS: list[str] = []
TRACEBACK_ENV = "GENEXP_TRACEBACK"


class JobFailed(Exception):
    """Raised by a failed job of a sweep, after it has reported and recorded its failure.

    Hydra's sweepers re-raise a job's exception once its batch has run (the other jobs still
    run), also when the job ran in another process (joblib, submitit) where FAILED_JOBS is not
    ours: so a sweep with a failed run exits 1 whatever the launcher.
    """

    def __init__(self, run_dir: str, reason: str) -> None:
        super().__init__(run_dir, reason)
        self.run_dir, self.reason = run_dir, reason


def show_tracebacks() -> bool:
    return os.environ.get(TRACEBACK_ENV) == "1"


def resolve_resume(cfg: DictConfig, hydra_dir: Path) -> tuple[Path, Path | None, DictConfig]:
    """(run_dir, checkpoint or None, config to run). Resuming reuses the run's recorded config."""
    resume = cfg.get("resume", False)
    if resume in (False, None, "false"):
        if (hydra_dir / "result.json").exists():
            raise GenexpError(f"{hydra_dir} already holds a run: choose another hydra.run.dir, or add resume=true "
                              f"to continue it (nothing was changed)")
        return hydra_dir, None, cfg
    target = hydra_dir if resume in (True, "true") else Path(str(resume)).expanduser()
    ckpt = target / "checkpoint.pt" if target.is_dir() else target
    if not ckpt.is_file():
        raise GenexpError(f"resume={resume}: no checkpoint at {ckpt}: pass resume=<run dir> of a run that saved one "
                          f"(or resume=true with hydra.run.dir=<run dir>)")
    run_dir = ckpt.parent
    recorded = run_dir / "config.yaml"
    if not recorded.is_file():
        raise GenexpError(f"resume={resume}: {recorded} is missing, so the run cannot be continued as it was")
    saved = OmegaConf.load(recorded)
    for key in ("progress", "device"):  # how to run, not what to run: the new invocation decides
        saved[key] = cfg[key]
    saved.resume = False
    return run_dir, ckpt, saved


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def hydra_train(cfg: DictConfig) -> float | None:
    from genexp.trainer import resolve_device, train

    hc = HydraConfig.get()
    hydra_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = hydra_dir
    d = distributed.Dist()
    started = False  # before this, run_dir may be an earlier run's dir: never write into it
    try:
        d = distributed.init(resolve_device(cfg.device).type)
        decision: object = None
        if d.is_main:
            try:
                decision = resolve_resume(cfg, hydra_dir)
            except GenexpError as e:
                decision = e
        decision = distributed.broadcast_object(decision, d)
        if isinstance(decision, GenexpError):
            raise decision
        run_dir, ckpt, cfg = decision
        started = True
        # The sweep objective (hydra/sweeper=optuna maximises it) is validation accuracy: never test.
        return train(cfg, run_dir, resume_from=ckpt, d=d)["val_acc"]
    except Exception as e:
        if show_tracebacks():
            raise
        if started and run_dir.is_dir() and d.is_main:
            (run_dir / "error.log").write_text(traceback.format_exc())
        if isinstance(e, GenexpError):
            reason = str(e)
            code = e.exit_code
        else:
            first = (str(e).splitlines() or [""])[0]
            where = f" (result.json marked failed; traceback in {run_dir / 'error.log'})" if started else ""
            reason = f"run failed: {type(e).__name__}: {first}{where}"
            code = 1
        print(f"error: {reason}", file=sys.stderr)
        if not multirun:
            sys.exit(code)
        FAILED_JOBS.append(str(run_dir))
        raise JobFailed(str(run_dir), reason) from None
    finally:
        distributed.shutdown()


def one_line(e: BaseException) -> str:
    """Hydra's multi-line composition errors, folded into one line."""
    parts = []
    for ln in str(e).splitlines():
        if ln.strip().startswith(("Config search path", "provider=")):
            break
        if ln.strip():
            parts.append(ln.strip())
    text = "; ".join(parts)
    return text.replace("Available options in", "available options in").replace(":;", ":")


def main(args: list[str]) -> int:
    sys.argv = ["genexp train", *args]
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        os.environ[TRACEBACK_ENV] = "1"
    rank = distributed.world_from_env().rank
    scratch = None
    if rank > 0:
        # Only rank 0 keeps a run dir; the others write Hydra's files to a scratch dir.
        scratch = tempfile.mkdtemp(prefix=f"genexp-rank{rank}-")
        sys.argv += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]
    # Let Hydra's own errors (unknown group option, bad override syntax) reach us as exceptions.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_train()
    except JobFailed as e:
        count = f"{len(FAILED_JOBS)} run(s)" if FAILED_JOBS else f"a run ({e.run_dir}) and maybe others"
        print(f"{count} of the sweep failed (the rest of its batch ran): each printed its reason above and "
              f"has result.json with status 'failed' unless it was refused before starting", file=sys.stderr)
        return 1
    except Exception as e:
        if show_tracebacks():
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if FAILED_JOBS:  # a sweeper that tolerated failures (optuna's max_failure_rate) still ends in exit 1
        print(f"{len(FAILED_JOBS)} run(s) of the sweep failed", file=sys.stderr)
        return 1
    return 0
