"""One job of `genexp train` (the run, or one run of a sweep): run under the run-dir policy, and
report how it ended: done, already complete, interrupted, failed or refused.

Errors a user can fix print one line and exit 2; a run that fails while training is recorded as
failed (result.json), prints one line and exits 1; in a sweep the job raises instead (JobFailed,
JobInterrupted) and the other runs go on.
"""
from __future__ import annotations

import shlex
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from genexp.command.claim import Claim
from genexp.command.hydra_workarounds import NO_SUBDIR, redirect_file_logs, remove_if_empty, save_hydra_files
from genexp.command.run_dir import AlreadyComplete, Decision, claim_job_dir, clear_attempt, resolve_resume, without_allow
from genexp.command.sweep import Sweep, note_job
from genexp.errors import GenexpError
from genexp.runs.files import atomic_write_text
from genexp.runs.record import Status
from genexp.train import distributed
from genexp.train.interrupt import Interrupted, StopOnSignal
from genexp.train.method_overrides import apply_method_overrides, shipped_methods

if TYPE_CHECKING:
    from genexp.train.outcome import RunState


class JobFailed(Exception):
    """Raised by a failed job of a sweep, after it has reported and recorded its failure.

    Hydra's sweepers re-raise a job's exception once its batch has run (the other jobs still
    run), also when the job ran in another process (joblib, submitit) whose Sweep is not the
    parent's: so a sweep with a failed run exits 1 whatever the launcher.
    """

    def __init__(self, run_dir: str, reason: str) -> None:
        super().__init__(run_dir, reason)
        self.run_dir, self.reason = run_dir, reason


@dataclass
class Job:
    """One job of `genexp train` (the run, or one run of a sweep), as its error handling sees it."""

    hydra_dir: Path
    multirun: bool
    run_dir: Path
    sweep: Sweep  # what the job reports to (genexp.command.sweep)
    search: bool = False  # a trial of a search: what it prints shows no test accuracy (genexp.command.search)
    d: distributed.Dist = field(default_factory=distributed.Dist)
    state: RunState | None = None  # how far the run got (genexp.train.outcome); its on_begin hook is the app's
    new_dir: Callable[[], None] | None = None  # what a new run's dir needs first (run_job decides; the app's begin hook calls it)


def run_job(cfg: DictConfig, job: Job, stop: StopOnSignal) -> dict | AlreadyComplete:
    """Check the config, claim the run dir, decide (rank 0, shared with the others) whether to
    start, resume or refuse, then train: the result record, or AlreadyComplete for a completed
    run (reported). The claim is held until the job ends, however it ends."""
    from genexp.train.build import declared
    from genexp.train.loop import train
    from genexp.train.setup import resolve_device, validate_config

    hc = HydraConfig.get()
    # the preset's per-method settings, before the config is checked and recorded (config.yaml shows them)
    command = [*hc.overrides.hydra, *hc.overrides.task]
    apply_method_overrides(cfg, command, known=lambda: known_methods(command, hc.job.config_name))
    validate_config(cfg)  # before anything else, resume included: bad values never start a run
    job.d = distributed.init(resolve_device(cfg.device).type)
    if not job.multirun and job.d.is_main:
        warn_unswept()
    decision: object = None
    held: Claim | None = None
    try:
        if job.d.is_main:
            try:
                held = claim_job_dir(cfg, job.hydra_dir)
                if job.multirun and held is not None:
                    note_job(held.run_dir)
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
        if ckpt is not None or decision.restart:
            validate_config(declared(run_cfg))  # the config the run recorded (read off disk), with the command's keys
        if job.run_dir != job.hydra_dir and job.d.is_main:
            redirect_file_logs(job.hydra_dir, job.run_dir)
            remove_if_empty(job.hydra_dir)
        if decision.restart:  # called once set up: a refusal changes nothing
            job.new_dir = lambda: clear_attempt(job.run_dir)
        elif ckpt is None:
            job.new_dir = lambda: save_hydra_files(job.run_dir, without_allow(cfg))
        return train(run_cfg, job.run_dir, resume_from=ckpt, checkpoint=loaded, d=job.d, stop=stop, state=job.state,
                     checked=True, show_test=not job.search)
    finally:
        if held is not None:
            held.release()


def known_methods(command: Iterable[str] = (), config_name: str = "train") -> list[str]:
    """The `method` group's options this command composes from: the shipped ones and those of
    the command's hydra.searchpath; the shipped ones alone where Hydra is not initialised."""
    from hydra.core.global_hydra import GlobalHydra

    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():
        return shipped_methods()
    searchpath = [o for o in command if o.lstrip("+~").startswith("hydra.searchpath")]
    return sorted(hydra.config_loader().get_group_options("method", config_name=config_name, overrides=searchpath))


def warn_unswept() -> None:
    """One line when the config defines a sweep (hydra.sweeper.params: a sweep preset) that runs
    without -m, which is one job with the config's own values."""
    hc = HydraConfig.get()
    params = hc.sweeper.get("params") or {}
    if not params:
        return
    preset = hc.runtime.choices.get("experiment")
    by = f"experiment={preset} is a sweep" if preset else "hydra.sweeper.params defines a sweep"
    args = [a for a in sys.argv[1:] if a != NO_SUBDIR and not a.lstrip("+~").startswith("hydra.run.dir=")]
    print(f"warning: {by} (over {', '.join(map(str, params))}), but without -m this runs one job; "
          f"the sweep: {shlex.join(['genexp', 'train', '-m', *args])}", file=sys.stderr, flush=True)


def fmt_acc(v: object) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "n/a"


def summary_line(result: dict, run_dir: Path, *, test: bool = True) -> str:
    """The job's done line; without `test` (a search's trial), validation accuracy alone."""
    wall = int(round(result.get("wall_time_s") or 0))
    took = f"wall {wall // 3600}:{wall % 3600 // 60:02d}:{wall % 60:02d}, run dir {run_dir}"
    if not test:
        return (f"done: val acc {fmt_acc(result.get('val_acc'))} (the search's objective) at step "
                f"{result.get('best_step')}, final {fmt_acc(result.get('val_acc_final'))}, {took}")
    at = f"at best val (step {result.get('best_step')}, val {fmt_acc(result.get('val_acc'))})" \
        if result.get("selection", "best_val") == "best_val" else "at the final step (no validation set)"
    return f"done: test acc {fmt_acc(result.get('test_acc'))} {at}, final {fmt_acc(result.get('test_acc_final'))}, {took}"


def resume_command(run_dir: Path, multirun: bool) -> str:
    one = f"genexp train resume={shlex.quote(str(run_dir.absolute()))}"
    if not multirun:
        return one
    # A job may run in a worker process that knows neither the command nor the sweep dir: the
    # sweep's parent prints the command for the whole sweep once every job has stopped.
    return f"{one} (this run; the command that finishes the whole sweep follows when it has stopped)"


def report_done(job: Job, result: dict | AlreadyComplete) -> float | None:
    """The job's return value: the sweep objective (hydra/sweeper=optuna maximises it) is
    validation accuracy, never test."""
    if isinstance(result, AlreadyComplete):
        return result.record.get("val_acc")
    if job.d.is_main:
        print(summary_line(result, job.run_dir, test=not job.search), flush=True)
    job.sweep.outcomes.append(Status.COMPLETED)
    return result["val_acc"]


def report_complete(job: Job, done: AlreadyComplete) -> None:
    r = done.record
    if job.d.is_main:
        acc = f"val acc {fmt_acc(r.get('val_acc'))}" if job.search else f"test acc {fmt_acc(r.get('test_acc'))} at best val"
        print(f"{done.run_dir} is already complete ({acc}, step {r.get('best_step')}): nothing to resume, "
              f"nothing was changed")
        if job.hydra_dir != done.run_dir:
            remove_if_empty(job.hydra_dir)
    job.sweep.outcomes.append(Status.COMPLETED)


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
    job.sweep.failed.append(str(run_dir))
    # A refused resume leaves its run's result.json, which the sweep summary counts already.
    job.sweep.outcomes.append("failed" if begun else "refused, recorded" if (run_dir / "result.json").is_file() else "refused")
    raise JobFailed(str(run_dir), reason) from None

