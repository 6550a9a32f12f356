"""The run-dir policy of `genexp train`: which dir a job writes into, and what it does there.

A job starts a new run, continues one from its checkpoint (`resume=`), restarts one that stopped
before its first checkpoint, or is refused (GenexpError: one line, exit 2). Every check happens
under the dir's claim (genexp.command.claim) and before anything is written, so a refusal, or a run
that is already complete (AlreadyComplete), leaves the dir as it was.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf, open_dict

from genexp.command.claim import CLAIM_FILE, Claim, claim
from genexp.errors import GenexpError
from genexp.runs.files import temp_files
from genexp.runs.record import RunRecord, Status, read_record

log = logging.getLogger(__name__)

# The files of a run dir that genexp writes with atomic_write: a kill mid-write leaves a temp file
# of one of these (`.checkpoint.pt.<8 characters>.tmp`), and nothing else of genexp's.
ATOMIC_FILES = ("checkpoint.pt", "best.pt", "result.json", "metrics.jsonl", "metrics.csv", "error.log", "split.json")


class AlreadyComplete(Exception):
    """The run a job would continue is complete (`record`: its result.json): nothing to do."""

    def __init__(self, run_dir: Path, record: RunRecord) -> None:
        super().__init__(run_dir, record)  # both in args: torchrun's broadcast pickles the exception
        self.run_dir, self.record = run_dir, record


def no_resume(resume: object) -> bool:
    """`resume=` asks for a new run."""
    return resume in (False, None, "false")


# Keys a resumed run takes from the new command: how to run it, not what it is (logger: how it is watched).
HOW_TO_RESUME = ("device", "progress", "logger", "log_every")
KEPT_UNLESS_GIVEN = ("log_every",)  # of those, what a resume keeps from the record unless the command sets it
NOT_RECORDED = "allow_targets"  # which plugins this command trusts: not part of what a run is


class Decision(NamedTuple):
    """What a job does: train `cfg` into `run_dir`, from `checkpoint` (loaded: `loaded`) or from
    step 0 (`restart`: a run that stopped before its first checkpoint, started again in its dir)."""

    run_dir: Path
    checkpoint: Path | None
    cfg: DictConfig
    loaded: dict | None
    restart: bool = False


def job_dir(cfg: DictConfig, hydra_dir: Path) -> Path | None:
    """The run dir a job writes into: Hydra's, or the one `resume=<dir or checkpoint>` names
    (None when that names nothing: the resume is refused without touching anything)."""
    resume = cfg.get("resume", False)
    if no_resume(resume) or resume in (True, "true"):
        return hydra_dir
    target = Path(str(resume)).expanduser()
    return target if target.is_dir() else target.parent if target.is_file() else None


def check_dir_kind(run_dir: Path, cfg: DictConfig) -> None:
    """A single run never goes into a sweep's root (its runs would be mixed into the sweep's table)."""
    if (run_dir / "multirun.yaml").exists():
        how = "resume=" if not no_resume(cfg.get("resume", False)) else "hydra.run.dir="
        raise GenexpError(f"{how}{run_dir} is a sweep's dir (multirun.yaml): choose another hydra.run.dir, or "
                          f"continue the sweep with genexp train -m <its overrides> resume=true "
                          f"hydra.sweep.dir={run_dir} (nothing was changed)")


def claim_job_dir(cfg: DictConfig, hydra_dir: Path) -> Claim | None:
    """Claim the job's run dir (see genexp.command.claim), or None when a resume names no dir (refused later)."""
    run_dir = job_dir(cfg, hydra_dir)
    if run_dir is None:
        return None
    check_dir_kind(run_dir, cfg)
    # create: Hydra made hydra_dir, but a racing job that gave up on it may have removed it since
    return claim(run_dir, create=run_dir == hydra_dir)


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _differs(new: Any, old: Any) -> bool:
    if isinstance(new, dict) and isinstance(old, dict):
        # keys genexp added after the run was recorded are not a change the user asked for
        return any(_differs(new[k], old[k]) for k in new.keys() & old.keys())
    return new != old


def changed_overrides(cfg: DictConfig, saved: DictConfig, overrides: list[str]) -> list[str]:
    """The command-line overrides that would make a resumed run differ from its recorded config."""
    changed = []
    for o in overrides:
        key = _override_key(o)
        if key in ("resume", NOT_RECORDED) or key.split(".")[0] in HOW_TO_RESUME or key.startswith("hydra."):
            continue
        new, old = _plain(OmegaConf.select(cfg, key, default=None)), _plain(OmegaConf.select(saved, key, default=None))
        if _differs(new, old):
            changed.append(f"{o} (recorded: {json.dumps(old) if not isinstance(old, dict) else old.get('name', old)})")
    return changed


def recorded_config(cfg: DictConfig, run_dir: Path, resume: object, overrides: list[str]) -> DictConfig:
    """The run's recorded config.yaml, refused if the command would change it; HOW_TO_RESUME's keys
    come from the command."""
    recorded = run_dir / "config.yaml"
    if not recorded.is_file():
        raise GenexpError(f"resume={resume}: {recorded} is missing, so the run cannot be continued as it was")
    try:
        saved = OmegaConf.load(recorded)
        if not isinstance(saved, DictConfig):
            raise ValueError("not a mapping")
    except Exception as e:
        raise GenexpError(f"resume={resume}: {recorded} is unreadable ({type(e).__name__}): nothing was changed: "
                          f"restore it from a copy, or start a new run") from None
    changed = changed_overrides(cfg, saved, overrides)
    if changed:
        takes = ", ".join(k + "=" for k in HOW_TO_RESUME)
        raise GenexpError(f"resume={resume}: {', '.join(changed)} would change the recorded run: a resumed run keeps "
                          f"its config.yaml and takes only {takes} from the command; drop them, or "
                          f"start a new run in another dir (nothing was changed)")
    given = {_override_key(o) for o in overrides}
    for key in HOW_TO_RESUME:  # how to run, not what to run: the new invocation decides
        if key in KEPT_UNLESS_GIVEN and key not in given and key in saved:
            continue  # the run keeps logging as it did unless the command says otherwise
        saved[key] = cfg.get(key) or {} if key == "logger" else cfg[key]  # logger=[] composes no node: no trackers
    saved.resume = False
    saved.pop(NOT_RECORDED, None)  # a run dir cannot grant itself trust
    if "ema_decay" in saved and "eval_ema" not in saved:  # a run recorded when eval_ema was named ema_decay
        saved.eval_ema = saved.pop("ema_decay")
    return saved


def check_recorded_targets(cfg: DictConfig, saved: DictConfig, source: str) -> None:
    """Before anything of a config read off disk is instantiated: see build.check_targets. Trusted
    are the command's allow_targets and every _target_ the command's own config names."""
    from genexp.train.build import check_targets, config_targets

    chosen = {t for _, t in config_targets(_plain(without_allow(cfg))) if isinstance(t, str)}
    check_targets(saved, source, allow_modules=[str(m) for m in cfg.get(NOT_RECORDED) or []], chosen=chosen)


def without_allow(cfg: DictConfig) -> DictConfig:
    """`cfg` without allow_targets (what a run records; a copy when it has the key)."""
    if NOT_RECORDED not in cfg:
        return cfg
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.pop(NOT_RECORDED)
    return out


def _holds_nothing(run_dir: Path) -> bool:
    return all(p.name in (CLAIM_FILE, "genexp.log") for p in run_dir.iterdir())


def resolve_resume(cfg: DictConfig, hydra_dir: Path, multirun: bool = False, overrides: list[str] | None = None
                   ) -> Decision:
    """What the job does (a Decision): start, continue from a checkpoint, or restart from step 0.

    Resuming reuses the run's recorded config. Every check happens before anything is written:
    a refusal (GenexpError) or a complete run (AlreadyComplete) leaves the run dir as it was.
    The caller holds the run dir's claim, so no other job changes it while this decides.
    """
    resume = cfg.get("resume", False)
    if no_resume(resume):
        if (hydra_dir / "result.json").exists():
            raise GenexpError(f"{hydra_dir} already holds a run: choose another hydra.run.dir, or add resume=true "
                              f"to continue it (nothing was changed)")
        return Decision(hydra_dir, None, without_allow(cfg), None)
    target = hydra_dir if resume in (True, "true") else Path(str(resume)).expanduser()
    ckpt = target / "checkpoint.pt" if target.is_dir() else target
    run_dir = ckpt.parent
    record = read_record(run_dir)
    has_config = (run_dir / "config.yaml").is_file()
    saved = recorded_config(cfg, run_dir, resume, overrides or []) if has_config else None
    if record is not None and record.status == Status.COMPLETED:
        raise AlreadyComplete(run_dir, record)
    if not ckpt.is_file():
        if multirun and resume in (True, "true") and record is None and not has_config and _holds_nothing(hydra_dir):
            # A sweep rerun with resume=true (a requeued Slurm sweep): runs it never started, start.
            fresh = without_allow(cfg)
            fresh.resume = False
            return Decision(hydra_dir, None, fresh, None)
        if saved is not None and ckpt.name == "checkpoint.pt":
            # Stopped (killed, crashed) before its first checkpoint: nothing to continue from, so
            # it runs again from step 0 with its recorded config and seed (the same result).
            check_recorded_targets(cfg, saved, f"resume={resume}: {run_dir / 'config.yaml'}")
            return Decision(run_dir, None, saved, None, restart=True)
        raise GenexpError(f"resume={resume}: no checkpoint at {ckpt}: pass resume=<run dir> of a run that saved one "
                          f"(or resume=true with hydra.run.dir=<run dir>)")
    if saved is None:
        raise GenexpError(f"resume={resume}: {run_dir / 'config.yaml'} is missing, so the run cannot be continued "
                          f"as it was")
    check_recorded_targets(cfg, saved, f"resume={resume}: {run_dir / 'config.yaml'}")
    return Decision(run_dir, ckpt, saved, load_resumed(ckpt, resume))


def load_resumed(ckpt: Path, resume: object) -> dict:
    """The checkpoint a run continues from, loaded, or refused (GenexpError) as unsafe or unreadable."""
    from genexp.train.checkpoint import UnsafeCheckpoint, load_checkpoint

    try:
        loaded = load_checkpoint(ckpt, "cpu")
        if not isinstance(loaded, dict) or not {"model", "optimizer", "loop"} <= loaded.keys():
            raise ValueError("not a genexp checkpoint")
    except UnsafeCheckpoint as e:
        raise GenexpError(f"resume={resume}: {e}: nothing was changed") from None
    except Exception as e:
        raise GenexpError(f"resume={resume}: the checkpoint {ckpt} is unreadable ({type(e).__name__}): "
                          f"nothing was changed: restore it from a copy, or start a new run") from None
    return loaded


def clear_attempt(run_dir: Path) -> None:
    """What a run that is restarted from step 0 wrote before it stopped (its metrics, TensorBoard
    events, traceback): the restart writes them again, and appending would mix two attempts."""
    print(f"{run_dir} stopped before its first checkpoint: restarting it from step 0 with its recorded config "
          f"and seed", flush=True)
    for name in ("metrics.jsonl", "error.log"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tb", ignore_errors=True)



def remove_stale_temps(run_dir: Path) -> None:
    """Remove the temp files a kill mid-write left in `run_dir` (genexp's own, of ATOMIC_FILES, in
    that dir only). Called once the run has begun, under the dir's claim: no writer of this run has
    one open, and a refusal before that point leaves the dir as it was."""
    for p in temp_files(run_dir, ATOMIC_FILES):
        try:
            p.unlink()
            log.info("removed %s, left by a write that was killed", p.name)
        except FileNotFoundError:
            pass
