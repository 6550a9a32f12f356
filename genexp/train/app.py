"""`genexp train`: the Hydra application around `trainer.train`.

Errors a user can fix (bad keys, names, paths, values) print one line and exit 2; a run that
fails while training is recorded as failed (result.json), prints one line and exits 1 — in a
sweep the other runs go on. GENEXP_TRACEBACK=1 (or HYDRA_FULL_ERROR=1) shows tracebacks.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from genexp.errors import TRACEBACK_ENV, GenexpError, one_line, show_tracebacks
from genexp.runs.files import atomic_write_text
from genexp.runs.record import Status, read_result
from genexp.train import distributed, interrupt
from genexp.train.claim import CLAIM_FILE, Claim, claim
from genexp.train.interrupt import ForwardSignals, Interrupted, JobInterrupted, StopOnSignal, exit_code
from genexp.train.method_settings import check_method_settings
from genexp.train.sweep_objective import maximise_objective

FAILED_JOBS: list[str] = []
RESULTS: list[str] = []  # this process's jobs: completed / failed / refused
SWEEP: dict[str, Any] = {}  # the sweep dir, and whether this command created it
RESTORE: dict[Path, bytes] = {}  # earlier files Hydra rewrites that must stay byte-identical
SUBDIR_ENV = "GENEXP_HYDRA_SUBDIR"
NO_SUBDIR = "hydra.output_subdir=null"


class JobFailed(Exception):
    """Raised by a failed job of a sweep, after it has reported and recorded its failure.

    Hydra's sweepers re-raise a job's exception once its batch has run (the other jobs still
    run), also when the job ran in another process (joblib, submitit) where FAILED_JOBS is not
    ours: so a sweep with a failed run exits 1 whatever the launcher.
    """

    def __init__(self, run_dir: str, reason: str) -> None:
        super().__init__(run_dir, reason)
        self.run_dir, self.reason = run_dir, reason


class Refused(BaseException):
    """A refusal raised where Hydra would swallow an Exception (callbacks): one line, exit 2."""


class AlreadyComplete(Exception):
    def __init__(self, run_dir: Path, record: dict) -> None:
        super().__init__(run_dir)
        self.run_dir, self.record = run_dir, record


def _no_resume(resume: object) -> bool:
    return resume in (False, None, "false")


# Keys a resumed run takes from the new command: how to run it, not what it is.
HOW_TO_RESUME = ("device", "progress")
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
    if _no_resume(resume) or resume in (True, "true"):
        return hydra_dir
    target = Path(str(resume)).expanduser()
    return target if target.is_dir() else target.parent if target.is_file() else None


def check_dir_kind(run_dir: Path, cfg: DictConfig) -> None:
    """A single run never goes into a sweep's root (its runs would be mixed into the sweep's table)."""
    if (run_dir / "multirun.yaml").exists():
        how = "resume=" if not _no_resume(cfg.get("resume", False)) else "hydra.run.dir="
        raise GenexpError(f"{how}{run_dir} is a sweep's dir (multirun.yaml): choose another hydra.run.dir, or "
                          f"continue the sweep with genexp train -m <its overrides> resume=true "
                          f"hydra.sweep.dir={run_dir} (nothing was changed)")


def claim_job_dir(cfg: DictConfig, hydra_dir: Path) -> Claim | None:
    """Claim the job's run dir (see genexp.train.claim), or None when a resume names no dir (refused later)."""
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
        if key in ("resume", NOT_RECORDED, *HOW_TO_RESUME) or key.startswith("hydra."):
            continue
        new, old = _plain(OmegaConf.select(cfg, key, default=None)), _plain(OmegaConf.select(saved, key, default=None))
        if _differs(new, old):
            changed.append(f"{o} (recorded: {json.dumps(old) if not isinstance(old, dict) else old.get('name', old)})")
    return changed


def recorded_config(cfg: DictConfig, run_dir: Path, resume: object, overrides: list[str]) -> DictConfig:
    """The run's recorded config.yaml, refused if the command would change it; `device` and
    `progress` come from the command."""
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
        raise GenexpError(f"resume={resume}: {', '.join(changed)} would change the recorded run: a resumed run keeps "
                          f"its config.yaml and takes only device= and progress= from the command; drop them, or "
                          f"start a new run in another dir (nothing was changed)")
    for key in HOW_TO_RESUME:  # how to run, not what to run: the new invocation decides
        saved[key] = cfg[key]
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
    if _no_resume(resume):
        if (hydra_dir / "result.json").exists():
            raise GenexpError(f"{hydra_dir} already holds a run: choose another hydra.run.dir, or add resume=true "
                              f"to continue it (nothing was changed)")
        return Decision(hydra_dir, None, without_allow(cfg), None)
    target = hydra_dir if resume in (True, "true") else Path(str(resume)).expanduser()
    ckpt = target / "checkpoint.pt" if target.is_dir() else target
    run_dir = ckpt.parent
    record = read_result(run_dir)
    has_config = (run_dir / "config.yaml").is_file()
    saved = recorded_config(cfg, run_dir, resume, overrides or []) if has_config else None
    if record is not None and record.get("status") == Status.COMPLETED:
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
    return Decision(run_dir, ckpt, saved, loaded)


def remove_if_empty(path: Path) -> None:
    """Remove a run dir that Hydra created for a run that then wrote nothing (refused, resumed elsewhere)."""
    try:
        path.rmdir()
    except OSError:
        return
    # and the parents Hydra created for it (outputs/runs), up to the working dir, while empty
    cwd = Path.cwd().resolve()
    for parent in path.resolve().parents:
        if parent == cwd or cwd not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def redirect_file_logs(old_dir: Path, new_dir: Path) -> None:
    """Point Hydra's job log (genexp.log, opened lazily) at the run dir that is actually used."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == old_dir:
            h.close()
            h.baseFilename = str(new_dir / Path(h.baseFilename).name)


def save_hydra_files(run_dir: Path, task_cfg: DictConfig) -> None:
    """Hydra's .hydra/{config,hydra,overrides}.yaml, written by us once a new run is accepted
    (main() turns Hydra's own writing off, which happens before a run could be refused)."""
    subdir = os.environ.get(SUBDIR_ENV)
    if not subdir:
        return
    out = run_dir / subdir
    out.mkdir(parents=True, exist_ok=True)
    hydra_cfg = OmegaConf.create(OmegaConf.to_container(HydraConfig.instance().cfg, resolve=False))
    hydra_cfg.hydra.output_subdir = subdir
    hydra_cfg.hydra.overrides.hydra = [o for o in hydra_cfg.hydra.overrides.hydra if o != NO_SUBDIR]
    OmegaConf.save(task_cfg, out / "config.yaml")
    OmegaConf.save(hydra_cfg, out / "hydra.yaml")
    OmegaConf.save(hydra_cfg.hydra.overrides.task, out / "overrides.yaml")


def fmt_acc(v: object) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "n/a"


def summary_line(result: dict, run_dir: Path) -> str:
    wall = int(round(result.get("wall_time_s") or 0))
    at = f"at best val (step {result.get('best_step')}, val {fmt_acc(result.get('val_acc'))})" \
        if result.get("selection", "best_val") == "best_val" else "at the final step (no validation set)"
    return (f"done: test acc {fmt_acc(result.get('test_acc'))} {at}, final {fmt_acc(result.get('test_acc_final'))}, "
            f"wall {wall // 3600}:{wall % 3600 // 60:02d}:{wall % 60:02d}, run dir {run_dir}")


def resume_command(run_dir: Path, multirun: bool) -> str:
    one = f"genexp train resume={shlex.quote(str(run_dir.absolute()))}"
    if not multirun:
        return one
    # A job may run in a worker process that knows neither the command nor the sweep dir: the
    # sweep's parent prints the command for the whole sweep once every job has stopped.
    return f"{one} (this run; the command that finishes the whole sweep follows when it has stopped)"


def sweep_resume_command(sweep: Path) -> str:
    """The sweep's own command (in this, its parent process) with resume=true and its dir: it
    starts the runs that never started, continues interrupted ones, leaves complete ones alone."""
    args = [a for a in sys.argv[1:] if a != NO_SUBDIR and not a.lstrip("+~").startswith(("resume=", "hydra.sweep.dir="))]
    return shlex.join(["genexp", "train", *args, "resume=true", f"hydra.sweep.dir={sweep.absolute()}"])


class SweepGuard(Callback):
    """Refuses a sweep into a dir that holds one (before Hydra rewrites its multirun.yaml); with
    resume=true keeps that multirun.yaml byte-identical."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # before Hydra builds the sweeper from this config
            note = maximise_objective(config)
        except GenexpError as e:
            raise Refused(str(e)) from None
        if note:
            print(f"note: {note}", file=sys.stderr)
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        SWEEP["dir"] = sweep_dir
        SWEEP["created"] = not sweep_dir.exists()
        if "joblib" in str(config.hydra.launcher.get("_target_", "")):
            interrupt.use_signal_aware_joblib()
        single = [n for n in ("result.json", "config.yaml", "checkpoint.pt") if (sweep_dir / n).exists()]
        if single:
            raise Refused(f"hydra.sweep.dir={sweep_dir} holds a single run ({single[0]}): choose another "
                          f"hydra.sweep.dir (nothing was changed)")
        earlier = sweep_dir / "multirun.yaml"
        if earlier.exists():
            if _no_resume(config.get("resume", False)):
                raise Refused(f"hydra.sweep.dir={sweep_dir} already holds a sweep: choose another hydra.sweep.dir, "
                              f"or add resume=true to continue its runs (nothing was changed)")
            RESTORE[earlier] = earlier.read_bytes()


class HeldFileLogs:
    """Holds back the lines for Hydra's genexp.log until the run begins (`write`): a start that is
    refused or interrupted then leaves no genexp.log, and an earlier run's stays byte-identical.
    Lines still reach the console at once."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self.handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
        self.holding = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.holding:
            self.records.append(record)
        return not self.holding

    def __enter__(self) -> "HeldFileLogs":
        self.holding = True
        for h in self.handlers:
            h.addFilter(self)
        return self

    def write(self) -> None:
        """The run began: its dir is there; write what was held, and from now on log straight through."""
        if not self.holding:
            return
        self.holding = False
        for h in self.handlers:
            for r in self.records:
                if r.levelno >= h.level:
                    h.handle(r)
        self.records = []

    def __exit__(self, *exc: object) -> None:
        self.holding = False  # never begun: what was held is dropped with the job
        self.records = []
        for h in self.handlers:
            h.removeFilter(self)


def begin_hook(on_begin: Any) -> Any:
    """A trainer.RunState that calls `on_begin` once the run has begun (its records written)."""
    from genexp.train.loop import RunState

    class _State(RunState):
        @property
        def begun(self) -> bool:
            return self.__dict__.get("_begun", False)

        @begun.setter
        def begun(self, value: bool) -> None:
            self.__dict__["_begun"] = value
            if value:
                on_begin()

    return _State()


@dataclass
class Job:
    """One job of `genexp train` (the run, or one run of a sweep), as its error handling sees it."""

    hydra_dir: Path
    multirun: bool
    run_dir: Path
    d: distributed.Dist = field(default_factory=distributed.Dist)
    state: Any = None  # genexp.train.loop.RunState


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def hydra_train(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    if hc.job.chdir and Path.cwd() != Path(hc.runtime.cwd):
        # genexp writes into the run dir by its path; in the run dir, relative paths (dataset.path)
        # would not be found and the dir could not be removed after a refusal.
        os.chdir(hc.runtime.cwd)
    hydra_dir = Path(hc.runtime.output_dir)
    held_logs = HeldFileLogs()
    job = Job(hydra_dir, hc.mode == RunMode.MULTIRUN, run_dir=hydra_dir, state=begin_hook(held_logs.write))
    stop = StopOnSignal(sweep=job.multirun)
    try:
        with stop, held_logs:
            if stop.signum is not None:  # the sweep was stopped before this job began: start nothing
                raise Interrupted(stop.signum, 0, cfg.steps)
            result = run_job(cfg, job, stop)
        if isinstance(result, AlreadyComplete):
            return result.record.get("val_acc")
        if job.d.is_main:
            print(summary_line(result, job.run_dir), flush=True)
        RESULTS.append(Status.COMPLETED)
        # The sweep objective (hydra/sweeper=optuna maximises it) is validation accuracy: never test.
        return result["val_acc"]
    except Interrupted as e:
        report_interrupted(job, e)
        stop.chain(e.signum)
        if job.multirun:  # the sweep's parent exits once every job has stopped
            raise JobInterrupted(e.signum, str(job.run_dir)) from None
        sys.exit(exit_code(e.signum))
    except KeyboardInterrupt:
        report_interrupted(job, None)
        if job.multirun:
            raise JobInterrupted(interrupt.stopped() or 2, str(job.run_dir)) from None
        sys.exit(130)
    except Exception as e:
        if show_tracebacks():
            if not job.state.begun and job.d.is_main:
                remove_if_empty(job.hydra_dir)  # the traceback instead of the line; still nothing left
            raise
        report_failure(job, e)
    finally:
        distributed.shutdown()


def run_job(cfg: DictConfig, job: Job, stop: StopOnSignal) -> dict | AlreadyComplete:
    """Check the config, claim the run dir, decide (rank 0, shared with the others) whether to
    start, resume or refuse, then train: the result record, or AlreadyComplete for a completed
    run (reported). The claim is held until the job ends, however it ends."""
    from genexp.train.loop import train
    from genexp.train.setup import resolve_device, validate_config

    validate_config(cfg)  # before anything else, resume included: bad values never start a run
    check_method_settings(HydraConfig.get().runtime.choices)
    job.d = distributed.init(resolve_device(cfg.device).type)
    decision: object = None
    held: Claim | None = None
    try:
        if job.d.is_main:
            try:
                held = claim_job_dir(cfg, job.hydra_dir)
                decision = resolve_resume(cfg, job.hydra_dir, job.multirun, list(HydraConfig.get().overrides.task))
            except (GenexpError, AlreadyComplete) as e:
                decision = e
        decision = distributed.broadcast_object(decision, job.d)
        if isinstance(decision, AlreadyComplete):
            report_complete(job, decision)
            return decision
        if isinstance(decision, GenexpError):
            raise decision
        assert isinstance(decision, Decision)
        job.run_dir, ckpt, run_cfg, loaded = decision[:4]
        if job.run_dir != job.hydra_dir and job.d.is_main:
            redirect_file_logs(job.hydra_dir, job.run_dir)
            remove_if_empty(job.hydra_dir)
        on_begin = None
        if decision.restart:
            on_begin = lambda: clear_attempt(job.run_dir)  # noqa: E731 (once set up: a refusal changes nothing)
        elif ckpt is None:
            on_begin = lambda: save_hydra_files(job.run_dir, without_allow(cfg))  # noqa: E731
        return train(run_cfg, job.run_dir, resume_from=ckpt, checkpoint=loaded, d=job.d, on_begin=on_begin,
                     stop=stop, state=job.state)
    finally:
        if held is not None:
            held.release()


def clear_attempt(run_dir: Path) -> None:
    """What a run that is restarted from step 0 wrote before it stopped (its metrics, TensorBoard
    events, traceback): the restart writes them again, and appending would mix two attempts."""
    print(f"{run_dir} stopped before its first checkpoint: restarting it from step 0 with its recorded config "
          f"and seed", flush=True)
    for name in ("metrics.jsonl", "error.log"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tb", ignore_errors=True)


def report_complete(job: Job, done: AlreadyComplete) -> None:
    r = done.record
    if job.d.is_main:
        print(f"{done.run_dir} is already complete (test acc {fmt_acc(r.get('test_acc'))} at best "
              f"val, step {r.get('best_step')}): nothing to resume, nothing was changed")
        if job.hydra_dir != done.run_dir:
            remove_if_empty(job.hydra_dir)
    RESULTS.append(Status.COMPLETED)


def report_interrupted(job: Job, e: Interrupted | None) -> None:
    """A first signal (`e`: a checkpoint was saved) or a second one (None: stopped without saving)."""
    if not job.d.is_main:
        return
    if not job.state.begun:
        by = "" if e is None else f" by {e.name}"
        print(f"interrupted{by} before training started: nothing was written", file=sys.stderr)
        remove_if_empty(job.hydra_dir)
    elif e is None:
        print(f"interrupted again: stopped without saving; resume continues from the last checkpoint: "
              f"{resume_command(job.run_dir, job.multirun)}", file=sys.stderr, flush=True)
    else:
        print(f"interrupted by {e.name} at step {e.step} of {e.total}: checkpoint saved; resume with: "
              f"{resume_command(job.run_dir, job.multirun)}", file=sys.stderr, flush=True)


def report_failure(job: Job, e: Exception) -> None:
    """One line on stderr; a run that began keeps its traceback in error.log. Exits (a single run)
    or raises JobFailed (a sweep's job: the sweep goes on)."""
    begun, run_dir = job.state.begun, job.run_dir
    if begun and run_dir.is_dir() and job.d.is_main:
        try:  # on a full disk the traceback cannot be kept; the one line below still says what failed
            atomic_write_text(run_dir / "error.log", traceback.format_exc())
        except OSError:
            pass
    if not begun and job.d.is_main:
        remove_if_empty(job.hydra_dir)
    if isinstance(e, GenexpError):
        reason, code = str(e), e.exit_code
    else:
        first = (str(e).splitlines() or [""])[0]
        if begun:
            where = f" (result.json marked failed; traceback in {run_dir / 'error.log'})"
        else:
            where = f" (nothing was changed in {run_dir}; GENEXP_TRACEBACK=1 shows the traceback)"
        reason, code = f"run failed: {type(e).__name__}: {first}{where}", 1
    print(f"error: {reason}", file=sys.stderr)
    if not job.multirun:
        sys.exit(code)
    FAILED_JOBS.append(str(run_dir))
    # A refused resume leaves its run's result.json, which the sweep summary counts already.
    RESULTS.append("failed" if begun else "refused, recorded" if (run_dir / "result.json").is_file() else "refused")
    raise JobFailed(str(run_dir), reason) from None


def sweep_summary(signum: int | None = None) -> str | None:
    """The sweep's last line; `signum`: the sweep was stopped by that signal (with the command to finish it)."""
    sweep = SWEEP.get("dir")
    name = signal.Signals(signum).name if signum is not None else ""
    if sweep is None or not sweep.is_dir():
        return f"sweep stopped by {name} before any run started: nothing was written" if signum else None
    statuses = [(read_result(p.parent) or {}).get("status", Status.UNREADABLE) for p in sorted(sweep.rglob("result.json"))]
    counts = {s: statuses.count(s) for s in dict.fromkeys([Status.COMPLETED, Status.FAILED, *statuses])}
    refused = RESULTS.count("refused")
    if refused:
        counts["refused (no run dir)"] = refused
    parts = ", ".join(f"{n} {s}" for s, n in counts.items())
    if signum is not None:
        return f"sweep {sweep} stopped by {name}: {parts}; finish it with: {sweep_resume_command(sweep)}"
    return f"sweep {sweep}: {parts}; table: genexp table {shlex.quote(str(sweep))}"


def finish_sweep() -> None:
    for path, data in RESTORE.items():
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
    sweep = SWEEP.get("dir")
    if sweep is not None and SWEEP.get("created") and sweep.is_dir():
        # Every run refused: the multirun.yaml Hydra wrote is all that is left; remove it.
        if [p.name for p in sweep.iterdir()] == ["multirun.yaml"]:
            (sweep / "multirun.yaml").unlink()
            remove_if_empty(sweep)


def main(args: list[str]) -> int:
    # The environment variables set below are for this command only: an in-process caller (a test)
    # gets its environment back, or a later subprocess would inherit HYDRA_FULL_ERROR=1 (tracebacks).
    saved_env = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", TRACEBACK_ENV, SUBDIR_ENV)}
    try:
        return _main(args)
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _main(args: list[str]) -> int:
    sys.argv = ["genexp train", *args]
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        os.environ[TRACEBACK_ENV] = "1"
    rank = distributed.world_from_env().rank
    scratch = None
    if rank > 0:
        # Only rank 0 keeps a run dir; the others write Hydra's files to a scratch dir.
        scratch = tempfile.mkdtemp(prefix=f"genexp-rank{rank}-")
        sys.argv += [f"hydra.run.dir={scratch}", NO_SUBDIR]
    elif not any(a.lstrip("+~").startswith("hydra.output_subdir") for a in args) \
            and not any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        # Hydra writes .hydra/*.yaml into the run dir before the run can be checked (and would
        # rewrite a completed run's); save_hydra_files writes them once a new run is accepted.
        os.environ[SUBDIR_ENV] = ".hydra"
        sys.argv.append(NO_SUBDIR)
    # Let Hydra's own errors (unknown group option, bad override syntax) reach us as exceptions.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    code = 0
    sweep_signals = ForwardSignals() if "-m" in args or "--multirun" in args else contextlib.nullcontext()
    try:
        with sweep_signals:
            hydra_train()
    except JobInterrupted as e:
        code = exit_code(e.signum)
    except JobFailed as e:
        count = f"{len(FAILED_JOBS)} run(s)" if FAILED_JOBS else f"a run ({e.run_dir}) and maybe others"
        print(f"{count} of the sweep failed (the rest of its batch ran): each printed its reason above; a failed "
              f"run has result.json with status 'failed', a refused one left no run dir", file=sys.stderr)
        code = 1
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was started", file=sys.stderr)
        return 130
    except Exception as e:
        if show_tracebacks():
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        finish_sweep()
    signum = interrupt.stopped() if isinstance(sweep_signals, ForwardSignals) else None
    if signum is not None or code > 128:
        signum = signum or code - 128
        summary = sweep_summary(signum)
        if summary is not None:
            print(summary, file=sys.stderr, flush=True)
        return exit_code(signum)
    if FAILED_JOBS and code == 0:  # a sweeper that tolerated failures (optuna's max_failure_rate) still ends in exit 1
        print(f"{len(FAILED_JOBS)} run(s) of the sweep failed", file=sys.stderr)
        code = 1
    summary = sweep_summary()
    if summary is not None:
        print(summary, file=sys.stderr if code else sys.stdout, flush=True)
    return code
