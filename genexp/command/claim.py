"""One live genexp process per run dir: the claim a run holds for as long as it runs.

Parallel starts are normal (two terminals, a Slurm array, joblib), and a check for an existing
result.json followed by writing one is a race both processes can win. So a job first claims its
run dir with an exclusive lock on `.genexp.lock` inside it (flock: the kernel drops it when the
process dies, SIGKILL included, so a lock that is held means a live run, and a lock file left by
a killed run is free to take). Every check of what the dir holds happens under the claim. The
claim file is removed on release, so a finished run dir holds no trace of it.

A sweep claims its sweep dir the same way (genexp.command.sweep), for the whole command: a second
sweep into that dir is refused while the first runs. Each of the sweep's jobs, in whatever
process it runs, adds its run dir as a line to that claim file (`add_note`): the sweep's last line
counts those runs alone, not a run someone else started into a subdir meanwhile.
"""
from __future__ import annotations

import errno
import os
import socket
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from genexp.errors import GenexpError

try:
    import fcntl
except ImportError:  # not POSIX: exclusive create only (see `claim`)
    fcntl = None  # type: ignore[assignment]

CLAIM_FILE = ".genexp.lock"
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


@dataclass
class Claim:
    """A held claim on `run_dir`; `release` gives it up (and removes the claim file)."""

    run_dir: Path
    fd: int

    @property
    def path(self) -> Path:
        return self.run_dir / CLAIM_FILE

    def notes(self) -> list[str]:
        """The lines added to the claim file since it was claimed (`add_note`), in order."""
        try:
            return self.path.read_text().splitlines()[1:]  # the first is the holder's stamp
        except OSError:
            return []

    def release(self) -> None:
        if self.fd < 0:
            return
        # Unlinked while still locked: a process that opened this file meanwhile finds it gone
        # once it gets the lock (st_nlink == 0) and starts over on a fresh file.
        with suppress(OSError):
            os.unlink(self.path)
        with suppress(OSError):
            os.close(self.fd)
        self.fd = -1


def _holder(path: Path) -> str:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return "another genexp process"
    return (lines[0].strip() if lines else "") or "another genexp process"


def _busy(run_dir: Path, path: Path, option: str) -> GenexpError:
    return GenexpError(f"{run_dir} is in use by a running genexp job ({_holder(path)}): wait for it to end, or "
                       f"choose another {option} (nothing was changed)")


def _stale(run_dir: Path, path: Path) -> GenexpError:
    return GenexpError(f"{run_dir} is claimed by {_holder(path)}, and without flock genexp cannot tell whether that "
                       f"job still runs: if it does not, delete {path} and run again (nothing was changed)")


def _stamp(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
             .encode())


def claim(run_dir: Path, *, create: bool, option: str = "hydra.run.dir") -> Claim:
    """Claim `run_dir` (creating it when `create`), or refuse (GenexpError) if a live job holds it
    (`option`: what the refusal tells the user to change)."""
    path = run_dir / CLAIM_FILE
    if fcntl is None:
        return _claim_exclusive(run_dir, create)
    for _ in range(50):
        if create:
            run_dir.mkdir(parents=True, exist_ok=True)
        try:
            try:
                fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                fd, created = os.open(path, os.O_RDWR), False
        except FileNotFoundError:
            if create:  # the dir was removed under us by a job that gave up on it: make it again
                continue
            raise GenexpError(f"{run_dir} does not exist") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in _BUSY:
                os.close(fd)
                raise _busy(run_dir, path, option) from None
            # No flock here (some network filesystems): the exclusive create above is the claim.
            if created:
                _stamp(fd)
                return Claim(run_dir, fd)
            os.close(fd)
            raise _stale(run_dir, path) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _stamp(fd)
            return Claim(run_dir, fd)
        os.close(fd)  # we locked a file its holder removed on release: start over
    raise _busy(run_dir, path, option)


def _claim_exclusive(run_dir: Path, create: bool) -> Claim:
    """Without flock: an exclusive create. Whether its holder still runs cannot be told, so a
    claim left by a killed job must be removed by hand (the message says which file)."""
    path = run_dir / CLAIM_FILE
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise _stale(run_dir, path) from None
    _stamp(fd)
    return Claim(run_dir, fd)


def add_note(claimed_dir: Path, note: str) -> None:
    """Add the line `note` to the claim file of `claimed_dir` (see the module's docstring). Without
    a claim file there (its holder has ended) nothing is written: a claim file is never created here."""
    try:
        fd = os.open(claimed_dir / CLAIM_FILE, os.O_WRONLY | os.O_APPEND)
    except OSError:
        return
    try:  # one write of one short line with O_APPEND: lines of parallel jobs do not interleave
        os.write(fd, f"{note}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)
