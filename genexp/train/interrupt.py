"""Ctrl-C (SIGINT) and SIGTERM (what Slurm sends on preemption or at the time limit).

The first signal only sets a flag: training stops at the next step boundary, saves a checkpoint
at that step, records `status: interrupted` and exits 130 (SIGINT) or 143 (SIGTERM). A second
signal stops at once (KeyboardInterrupt): resuming then continues from the last periodic
checkpoint. When a handler of our own replaced a Python handler (submitit's SIGUSR2 handler
under `hydra/launcher=slurm`), that handler is called after the checkpoint is saved, so the job
is requeued as submitit would have done. Inside `stop_at_once` the first signal raises
Interrupted at once instead: before training (encoding frozen-encoder features: minutes, and
nothing a stop could leave half-done) and while an evaluation scores (BatchNorm re-estimation,
validation and test: minutes for a large test set on a CPU), whose checkpoint then holds the
evaluation as pending, to be run first when the run resumes.

A sweep (`-m`) is stopped as a whole: its parent process holds `ForwardSignals`, which passes a
signal on to the worker processes of the joblib launcher (each saves and records its run as
above) and waits for them; a process that has had a signal starts no further job of the sweep
(its `SweepSignals`), and every job that stopped raises `JobInterrupted`, so that the parent exits
130/143 once every worker has saved, printing the command that finishes the sweep.

A sweep's parent that dies without passing a signal on (SIGKILL, the OOM killer) cannot stop
its joblib workers, so each watches its parent (`watch_parent`): once the parent is gone, the
worker stops as on SIGTERM (its run saves a checkpoint and records `interrupted`; resume=true
into the sweep dir continues it), then exits, and loky's resource tracker, whose last users
the workers were, exits with them. The watch compares os.getppid() with the parent's pid, which
changes when the parent dies on Linux and macOS (the orphan is re-parented). Not on Windows,
where getppid() keeps the dead parent's pid: there the workers are left running as before.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Iterator

SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR2")
FORWARDED = ("SIGINT", "SIGTERM")


class SweepSignals:
    """The first signal one process of a sweep had (`signum`): once it is set, no further job of
    the sweep starts in that process. A sweep's parent holds one (its `ForwardSignals`), and so
    does each joblib worker (`worker_init`), as the handler it installs."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def note(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.note(signum)

    @staticmethod
    def installed() -> "SweepSignals":
        """This process's: the one whose handler holds SIGINT (a joblib worker's), else a new one."""
        noted = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
        return noted if isinstance(noted, SweepSignals) else SweepSignals()


def exit_code(signum: int) -> int:
    return 128 + signum


class Interrupted(BaseException):
    """Training stopped on a signal after saving a checkpoint at `step` (a BaseException, so that
    generic `except Exception` handlers, Hydra's among them, let it through)."""

    def __init__(self, signum: int, step: int, total: int) -> None:
        super().__init__(signum, step, total)
        self.signum, self.step, self.total = signum, step, total

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class JobInterrupted(Exception):
    """A sweep's job stopped by a signal (saved, or not started at all).

    An Exception, not a BaseException: Hydra's launchers then return it as the job's result,
    where anything else would make joblib kill the other workers, possibly mid-save; the
    sweeper raises it in the parent once the batch is done.
    """

    def __init__(self, signum: int, run_dir: str) -> None:
        super().__init__(signum, run_dir)
        self.signum, self.run_dir = signum, run_dir


_running = 0  # jobs of this process inside their StopOnSignal: saving, when stopped, happens in there
_entered: list["StopOnSignal"] = []  # innermost last


@contextlib.contextmanager
def stop_at_once(steps: int, step: int = 0) -> Iterator[None]:
    """Within: a first SIGINT/SIGTERM raises Interrupted (at `step` of `steps`) wherever the main
    thread is, instead of being noted for the next step boundary; a signal noted before raises on
    entry. For long phases that leave nothing half-done when stopped anywhere (loading an encoder
    and encoding texts, whose cache entry is written atomically; an evaluation's scoring, which
    writes nothing): they stop within one op, not after minutes of calls that never look at a flag."""
    stop = _entered[-1] if _entered else None
    if stop is None:
        yield
        return
    if stop.signum is not None:
        raise Interrupted(stop.signum, step, steps)
    before, stop.at_once = stop.at_once, (step, steps)
    try:
        yield
    finally:
        stop.at_once = before


class StopOnSignal:
    """While entered, SIGINT/SIGTERM (and SIGUSR2 when a Python handler already owns it) set `signum`.

    A job of a sweep passes its process's `SweepSignals` (`sweep`): a signal the process had
    before (between two jobs of the sweep) counts too, and a signal now is noted there.
    """

    def __init__(self, sweep: SweepSignals | None = None) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}
        self.sweep = sweep
        self.at_once: tuple[int, int] | None = None  # inside stop_at_once: (step, the run's steps)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: stop now, without saving
        self.signum = signum
        if self.sweep is not None:
            self.sweep.note(signum)
        if self.at_once is not None:
            raise Interrupted(signum, *self.at_once)

    def __enter__(self) -> "StopOnSignal":
        global _running
        _running += 1
        _entered.append(self)
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            prev = signal.getsignal(sig)
            if name == "SIGUSR2" and not callable(prev):
                continue  # only take SIGUSR2 over from a handler that wants it (submitit)
            self.previous[sig] = prev
            signal.signal(sig, self._handle)
        if self.sweep is not None and self.sweep.signum is not None:
            self.signum = self.sweep.signum
        return self

    def __exit__(self, *exc: object) -> None:
        global _running
        for sig, prev in self.previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self.previous = {}
        _running -= 1
        if self in _entered:
            _entered.remove(self)

    def chain(self, signum: int) -> None:
        """Hand a signal we took over from a Python handler (not SIGINT's default) back to it."""
        prev = self.previous.get(signum)
        if callable(prev) and prev is not signal.default_int_handler:
            prev(signum, None)


def worker_init(parent: int | None = None) -> None:
    """Run by each joblib (loky) worker as it starts (`parent`: the sweep's parent process, watched).

    Its own process group keeps a Ctrl-C at the terminal (SIGINT to the foreground group) from
    reaching it besides the copy the parent forwards, which would count as a second signal and
    stop it without saving; it also marks the worker as one the parent forwards signals to. A
    signal between two jobs only notes that the sweep stops, where the default handler would
    kill the worker, and loky would then kill the others as a broken pool.
    """
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    noted = SweepSignals()  # the worker's: its handler keeps it, and its jobs find it there
    for name in FORWARDED:
        signal.signal(getattr(signal, name), noted.handle)
    if parent is not None:
        threading.Thread(target=watch_parent, args=(parent, noted), name="genexp-watch-parent", daemon=True).start()


POLL_S = 0.5


def watch_parent(parent: int, noted: SweepSignals) -> None:
    """In a joblib worker: once `parent` has died, stop as on SIGTERM and exit (see the module's docstring).

    Not prctl(PR_SET_PDEATHSIG): it fires when the *thread* that started the worker ends (loky
    starts replacements from its manager thread), and a worker between two jobs only notes a
    signal; so a thread polls, on every POSIX system.
    """
    while os.getppid() == parent:
        time.sleep(POLL_S)
    if noted.signum is None:
        # The job (in the main thread) saves and records `interrupted` as on a forwarded SIGTERM;
        # a worker that has had a signal already is saving: a second one would stop it unsaved.
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(POLL_S)  # for the handler to run, and a job just taken from the queue to begin
    while _running:
        time.sleep(POLL_S)
    time.sleep(POLL_S)  # for the job's last line (where to resume it)
    # Nobody is left to take results or give jobs: loky's loop would wait for its idle timeout.
    os._exit(exit_code(noted.signum or signal.SIGTERM))


def use_signal_aware_joblib() -> None:
    """Have Hydra's joblib launcher (which asks joblib for "loky" by name) start its workers
    with `worker_init`."""
    from joblib import register_parallel_backend
    from joblib._parallel_backends import LokyBackend

    class Backend(LokyBackend):
        def configure(self, n_jobs: int = 1, parallel: Any = None, prefer: Any = None, require: Any = None,
                      idle_worker_timeout: Any = None, **kwargs: Any) -> int:
            kwargs.setdefault("initializer", worker_init)
            # equal for every batch of the sweep, so that loky reuses its workers
            kwargs.setdefault("initargs", (os.getpid(),))
            return super().configure(n_jobs, parallel, prefer, require, idle_worker_timeout, **kwargs)

    register_parallel_backend("loky", Backend)


def _workers() -> dict[int, str]:
    """This process's children to pass a signal on to: {pid: "joblib" | "submitit"}.

    joblib workers are the children that lead their own process group (`worker_init`);
    submitit_local's job controllers are found by their command line.
    """
    me, found = os.getpid(), {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
            if int(fields[1]) != me:
                continue
            if int(fields[2]) == int(entry.name):
                found[int(entry.name)] = "joblib"
            elif b"submitit.local._local" in (entry / "cmdline").read_bytes():
                found[int(entry.name)] = "submitit"
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


class ForwardSignals(SweepSignals):
    """Held by a sweep's parent process: SIGINT/SIGTERM are passed on to the workers and noted
    (no further job starts, the parent exits 128+signum once the workers have saved and
    returned). In-process jobs (the basic launcher) take the signal over with their own
    StopOnSignal while they run, noting it here."""

    def __init__(self) -> None:
        super().__init__()
        self.previous: dict[int, Any] = {}
        self.count = 0

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.note(signum)
        self.count += 1
        workers = _workers()
        for pid, kind in workers.items():
            # A submitit_local controller passes SIGTERM on to its job, but answers SIGINT by
            # killing the job a second later: it gets SIGTERM.
            sent = signal.SIGTERM if kind == "submitit" else signum
            try:
                os.kill(pid, sent)
            except OSError:
                pass  # it has just exited
        if self.count == 1:
            what = f"{len(workers)} worker(s) save their run and stop; " if workers else ""
            # os.write: a handler may run in the middle of another print
            os.write(2, f"{signal.Signals(signum).name}: stopping the sweep: {what}no further run starts\n".encode())

    def __enter__(self) -> "ForwardSignals":
        self.signum = None
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in FORWARDED:
            sig = getattr(signal, name)
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, prev in self.previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self.previous = {}
        if self.signum is not None:
            _shut_down_pool()


def _shut_down_pool() -> None:
    """Let the idle joblib workers of a stopped sweep exit now, not when loky's idle timeout ends
    (and never reuse workers that have noted a signal)."""
    if "joblib" not in sys.modules:
        return
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)
