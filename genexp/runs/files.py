"""Files written whole or not at all: the one atomic writer (records, checkpoints, caches, tables,
plots) and a chunked SHA-256."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

# Free bytes below which a write that failed without an OSError is taken for a full disk.
FULL_BELOW = 1 << 16


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (hashlib.file_digest needs Python 3.11)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Have `write` fill a temp file in `path`'s directory, fsync it, then rename it over `path`:
    readers see the old file or the new one, never half of one. The one home of this pattern
    (records, checkpoints, caches): whatever fails — a full disk, a kill's KeyboardInterrupt —
    the temp file is removed and `path` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; a record or a cache is a file like any other: 0666 minus the umask.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        failed_write = _write_error(e, path)  # before the temp file goes: it may be what filled the disk
        Path(tmp).unlink(missing_ok=True)
        if failed_write is not None:
            raise failed_write from e
        raise


def _write_error(e: BaseException, path: Path) -> OSError | None:
    """The OSError behind a writer's own error, or None. torch's zip writer reports a write that
    failed (a full disk) as RuntimeError "enforce fail ... unexpected pos", keeping the OSError at
    most as the exception's context: a run's record should say "No space left on device"."""
    if isinstance(e, OSError) or not isinstance(e, Exception):
        return None
    cause = e.__cause__ or e.__context__
    for _ in range(8):  # a few links are plenty, and a cycle cannot hang
        if cause is None or isinstance(cause, OSError):
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError):
        return OSError(cause.errno, cause.strerror or str(cause), str(path))
    if isinstance(e, RuntimeError):
        try:  # the OSError was swallowed: a disk with next to nothing left still explains the failure
            st = os.statvfs(path.parent)
        except OSError:
            return None
        if st.f_bavail * st.f_frsize < FULL_BELOW:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


def temp_files(directory: Path, names: Iterable[str]) -> list[Path]:
    """The temp files atomic_write makes for `names` in `directory` (not below it): left behind only
    by a kill mid-write (SIGKILL, a power cut), which no `except` outlives."""
    # mkstemp's names: prefix, 8 characters of [a-z0-9_], suffix (as atomic_write calls it)
    pattern = re.compile("|".join(re.escape(f".{n}.") + r"[a-z0-9_]{8}\.tmp" for n in names))
    try:
        return sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name) and not p.is_dir())
    except OSError:
        return []


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, then rename: readers never see half a file."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
