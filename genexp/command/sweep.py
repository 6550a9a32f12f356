"""A sweep (`genexp train -m`) as its parent process sees it: the guard Hydra calls before it
writes the sweep dir, what the sweep's in-process jobs report, and the sweep's last line.

One `Sweep` belongs to one `genexp train` command (genexp.command.app.main). Hydra instantiates
SweepGuard from the config and calls the jobs itself, so neither can be handed that object: they
find it in `CURRENT`, a context variable main() sets for the length of the command and resets
after (its value is never shared between two commands). A job in a worker process (joblib,
submitit) has none: it gets a Sweep of its own, whose records its parent never reads.

The parent holds the sweep dir's claim (genexp.command.claim) from SweepGuard to the end of the
command: a second sweep into the dir is refused while it runs (also one with resume=true; a
sweep that is not running, SIGKILLed included, leaves a claim that is free to take). Every job
notes its run dir in that claim (`note_job`), from whatever process it runs in, and the last
line counts those runs alone.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genexp.command.claim import CLAIM_FILE, Claim, add_note, claim
from genexp.command.hydra_workarounds import NO_SUBDIR, remove_if_empty
from genexp.command.run_dir import no_resume
from genexp.command.search import RESULTS_FILE, best_setting, is_search, rerun_command
from genexp.command.sweep_objective import maximise_objective
from genexp.errors import GenexpError
from genexp.runs.record import Status, read_record
from genexp.train import interrupt
from genexp.train.interrupt import SweepSignals, exit_code
from genexp.train.threads import PARALLEL_ENV, launcher_parallelism


class Refused(BaseException):
    """A refusal raised where Hydra would swallow an Exception (callbacks warn and go on): one
    line, exit 2."""


@dataclass
class Sweep:
    """What one `genexp train` command learns of its sweep while Hydra runs it."""

    signals: SweepSignals = field(default_factory=SweepSignals)  # the first signal the sweep had
    dir: Path | None = None  # the sweep dir (set by SweepGuard)
    created: bool = False  # whether this command created it
    restore: dict[Path, bytes] = field(default_factory=dict)  # earlier files Hydra rewrites, to keep byte-identical
    failed: list[str] = field(default_factory=list)  # run dirs of this process's failed jobs
    outcomes: list[str] = field(default_factory=list)  # this process's jobs: completed / failed / refused
    claim: Claim | None = None  # the sweep dir's, held by the parent while the command runs
    runs: list[Path] = field(default_factory=list)  # the run dirs of the sweep's jobs (read when the claim is released)
    search: bool = False  # a search (genexp.command.search), not a grid
    results_before: int | None = None  # a search's results file's mtime_ns before it ran (None: there was none)

    @contextmanager
    def current(self) -> Iterator[Sweep]:
        """While entered, this is the Sweep that SweepGuard and the in-process jobs report to."""
        token = CURRENT.set(self)
        try:
            yield self
        finally:
            CURRENT.reset(token)

    def summary(self, signum: int | None = None) -> str | None:
        """The sweep's last line; `signum`: the sweep was stopped by that signal (with the command to finish it)."""
        name = signal.Signals(signum).name if signum is not None else ""
        if self.dir is None or not self.dir.is_dir():
            return f"sweep stopped by {name} before any run started: nothing was written" if signum else None
        statuses = [(read_record(d) or {}).get("status", Status.UNREADABLE)
                    for d in sorted(set(self.runs)) if (d / "result.json").exists()]
        counts = {s: statuses.count(s) for s in dict.fromkeys([Status.COMPLETED, Status.FAILED, *statuses])}
        refused = self.outcomes.count("refused")
        if refused:
            counts["refused (no run dir)"] = refused
        parts = ", ".join(f"{n} {s}" for s, n in counts.items())
        if signum is not None:
            return f"sweep {self.dir} stopped by {name}: {parts}; finish it with: {sweep_resume_command(self.dir)}"
        if self.search:  # a table of its trials would show their test accuracy: the rerun's table is the one to read
            return f"sweep {self.dir}: {parts}"
        return f"sweep {self.dir}: {parts}; table: genexp table {shlex.quote(str(self.dir))}"

    def failed_line(self, run_dir: str) -> str:
        """What the parent says when a sweep's job failed (`run_dir`: the one Hydra re-raised)."""
        count = f"{len(self.failed)} run(s)" if self.failed else f"a run ({run_dir}) and maybe others"
        return (f"{count} of the sweep failed (the rest of its batch ran): each printed its reason above; a failed "
                f"run has result.json with status 'failed', a refused one left no run dir")

    def finish(self) -> None:
        """Put back what Hydra changed in the sweep dir that no run of this command needed."""
        # Undoes Hydra's launcher rewriting multirun.yaml at every sweep: a resumed sweep keeps its bytes.
        for path, data in self.restore.items():
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
        emptied = False
        if self.dir is not None and self.created and self.dir.is_dir():
            # Undoes Hydra writing multirun.yaml into a new sweep dir before any job runs: every
            # run refused, it is all that is left; remove it.
            if [p.name for p in self.dir.iterdir() if p.name != CLAIM_FILE] == ["multirun.yaml"]:
                (self.dir / "multirun.yaml").unlink()
                emptied = True
        if self.claim is not None:
            self.runs = [Path(json.loads(n)) for n in self.claim.notes() if n.startswith('"')]
            self.claim.release()
            self.claim = None
        if emptied:
            remove_if_empty(self.dir)

    def close(self, code: int, signum: int | None) -> int:
        """Print the sweep's last line and return the command's exit code (`code`: so far; `signum`:
        the signal that stopped the sweep, if any)."""
        if signum is not None or code > 128:
            signum = signum or code - 128
            summary = self.summary(signum)
            if summary is not None:
                print(summary, file=sys.stderr, flush=True)
            return exit_code(signum)
        if self.failed and code == 0:  # a sweeper that tolerated failures (optuna's max_failure_rate) still ends in exit 1
            print(f"{len(self.failed)} run(s) of the sweep failed", file=sys.stderr)
            code = 1
        summary = self.summary()
        if summary is not None:
            print(summary, file=sys.stderr if code else sys.stdout, flush=True)
        rerun = self.rerun_line()
        if rerun is not None:
            print(rerun, file=sys.stderr if code else sys.stdout, flush=True)
        return code

    def rerun_line(self) -> str | None:
        """A search's last line: the command that reruns its best setting over seeds (None when
        this command's search wrote no best setting)."""
        if not self.search or self.dir is None:
            return None
        try:
            written = (self.dir / RESULTS_FILE).stat().st_mtime_ns
        except OSError:
            return None
        best = best_setting(self.dir) if written != self.results_before else None  # not an earlier search's
        if best is None:
            return None
        params, value = best
        acc = f" (val acc {100 * value:.2f}%)" if value is not None else ""
        args = [a for a in sys.argv[1:] if a != NO_SUBDIR]
        return f"best setting{acc}; rerun it over seeds for the numbers to report: {rerun_command(args, params)}"


CURRENT: ContextVar[Sweep] = ContextVar("genexp_train_sweep")


def current_sweep() -> Sweep:
    """The command's Sweep (see the module's docstring); in a worker process, one of its own."""
    return CURRENT.get(None) or Sweep(SweepSignals.installed())


def note_job(run_dir: Path) -> None:
    """In a sweep's job (in any process), once it holds `run_dir`: have the sweep's last line count it."""
    hc = HydraConfig.get()
    # JSON: one line whatever the path holds
    add_note(Path(hc.runtime.cwd) / str(hc.sweep.dir), json.dumps(str(run_dir.absolute())))


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
        sweep = current_sweep()
        sweep.dir = sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        existed = sweep_dir.exists()
        try:  # held until the command ends (Sweep.finish): every check below happens under it
            sweep.claim = claim(sweep_dir, create=True, option="hydra.sweep.dir")
        except GenexpError as e:
            raise Refused(str(e)) from None
        sweep.created = not existed
        sweep.search = is_search(config.hydra)
        with contextlib.suppress(OSError):
            sweep.results_before = (sweep_dir / RESULTS_FILE).stat().st_mtime_ns
        if "joblib" in str(config.hydra.launcher.get("_target_", "")):
            interrupt.use_signal_aware_joblib()
        # How many jobs will share this machine's cores: each job's cpu_threads=auto takes its share
        # (the workers inherit the environment; the command restores it when it ends).
        os.environ[PARALLEL_ENV] = str(launcher_parallelism(config.hydra.launcher))
        single = [n for n in ("result.json", "config.yaml", "checkpoint.pt") if (sweep_dir / n).exists()]
        if single:
            raise Refused(f"hydra.sweep.dir={sweep_dir} holds a single run ({single[0]}): choose another "
                          f"hydra.sweep.dir (nothing was changed)")
        earlier = sweep_dir / "multirun.yaml"
        if earlier.exists():
            if no_resume(config.get("resume", False)):
                raise Refused(f"hydra.sweep.dir={sweep_dir} already holds a sweep: choose another hydra.sweep.dir, "
                              f"or add resume=true to continue its runs (nothing was changed)")
            sweep.restore[earlier] = earlier.read_bytes()
