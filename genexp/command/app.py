"""`genexp train`: the Hydra application around `genexp.train.loop.train`.

Errors a user can fix (bad keys, names, paths, values) print one line and exit 2; a run that
fails while training is recorded as failed (result.json), prints one line and exits 1 — in a
sweep the other runs go on. GENEXP_TRACEBACK=1 (or HYDRA_FULL_ERROR=1) shows tracebacks.

What a job does with its run dir is genexp.command.run_dir; one job and its reports,
genexp.command.job; a sweep's guard and last line, genexp.command.sweep; what is undone of Hydra's
own handling of run dirs, genexp.command.hydra_workarounds.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from genexp.command.hydra_workarounds import (
    HeldFileLogs,
    blame_dir_interpolation,
    hydra_argv,
    hydra_environment,
    remove_if_empty,
    undo_chdir,
)
from genexp.command.job import Job, JobFailed, report_done, report_failure, report_interrupted, run_job
from genexp.command.run_dir import remove_stale_temps
from genexp.command.search import is_search
from genexp.command.sweep import Refused, Sweep, current_sweep
from genexp.errors import TRACEBACK_ENV, one_line, show_tracebacks
from genexp.train import distributed
from genexp.train.interrupt import ForwardSignals, Interrupted, JobInterrupted, StopOnSignal, SweepSignals, exit_code
from genexp.train.outcome import RunState

__all__ = ("main", "hydra_train", "TRACEBACK_ENV")


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def hydra_train(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    undo_chdir(hc)
    hydra_dir = Path(hc.runtime.output_dir)
    held_logs = HeldFileLogs()
    multirun = hc.mode == RunMode.MULTIRUN
    job = Job(hydra_dir, multirun, run_dir=hydra_dir, sweep=current_sweep(), search=multirun and is_search(hc))

    def begin(new: bool) -> None:
        """Every refusal is behind: the run dir (job.run_dir, the decided one) may change now."""
        if new and job.new_dir is not None and job.d.is_main:
            job.new_dir()  # first: clearing an earlier attempt would remove the logs written below
        held_logs.write()
        if job.d.is_main:
            remove_stale_temps(job.run_dir)

    job.state = RunState(on_begin=begin)
    stop = StopOnSignal(sweep=job.sweep.signals if job.multirun else None)
    try:
        with stop, held_logs:
            if stop.signum is not None:  # the sweep was stopped before this job began: start nothing
                raise Interrupted(stop.signum, 0, cfg.steps)
            result = run_job(cfg, job, stop)
        if job.state.begun and job.d.is_main:
            remove_stale_temps(job.run_dir)  # a completed run leaves none, whenever they were left
        return report_done(job, result)
    except Interrupted as e:
        report_interrupted(job, e)
        stop.chain(e.signum)
        if job.multirun:  # the sweep's parent exits once every job has stopped
            raise JobInterrupted(e.signum, str(job.run_dir)) from None
        sys.exit(exit_code(e.signum))
    except KeyboardInterrupt:
        report_interrupted(job, None)
        if job.multirun:
            raise JobInterrupted(job.sweep.signals.signum or 2, str(job.run_dir)) from None
        sys.exit(130)
    except Exception as e:
        if show_tracebacks():
            if not job.state.begun and job.d.is_main:
                remove_if_empty(job.hydra_dir)  # the traceback instead of the line; still nothing left
            raise
        report_failure(job, e)
    finally:
        distributed.shutdown()


def main(args: list[str]) -> int:
    """`genexp train <args>`: the exit code (0; 1 a run failed; 2 refused; 128+signal interrupted)."""
    # Optuna's storage module imports alembic, whose plugins log ~30 INFO lines through Hydra's
    # handler before a search's first trial: set-up noise, not the search's.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with hydra_environment():
        scratch = hydra_argv(args)
        forward = "-m" in args or "--multirun" in args  # a sweep's parent passes signals on to its workers
        sweep = Sweep(ForwardSignals() if forward else SweepSignals())
        try:
            code = run_hydra(sweep, forward)
        except Refused as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: nothing was started", file=sys.stderr)
            return 130
        except Exception as e:
            if show_tracebacks():
                raise
            print(f"error: {blame_dir_interpolation(e) or one_line(e)}", file=sys.stderr)
            return 2
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            sweep.finish()
        return sweep.close(code, sweep.signals.signum if forward else None)


def run_hydra(sweep: Sweep, forward: bool) -> int:
    """Hydra's main, with `sweep` as the command's: 0, or what the exception Hydra re-raised from a
    sweep's job means: 1 (a run failed) or 128+signal (the sweep was interrupted)."""
    try:
        with sweep.current(), sweep.signals if forward else contextlib.nullcontext():
            hydra_train()
    except JobInterrupted as e:
        return exit_code(e.signum)
    except JobFailed as e:
        print(sweep.failed_line(e.run_dir), file=sys.stderr)
        return 1
    return 0
