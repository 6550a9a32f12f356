"""An on-disk cache of encoded text features: one safetensors file per key.

A key is the SHA-256 of everything the features depend on (the caller lists it), so a changed
model, tokenizer setting, pooling or text gives a new entry and never a stale one. Entries are
written to a temp file and renamed, so a reader sees a whole file or none; a lock file next to
the entry makes parallel sweep workers that start together encode once: the first builds, the
others wait on the lock and then read what it wrote.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from torch import Tensor

from genexp.errors import GenexpError

log = logging.getLogger(__name__)

# Bump when the stored layout or the meaning of a stored tensor changes.
FORMAT = 1


def digest_texts(*splits: Sequence[str]) -> str:
    """SHA-256 over the splits' texts in order; lengths are hashed too, so no two different lists
    of strings (or ways to cut them into splits) give the same byte stream."""
    h = hashlib.sha256()
    for texts in splits:
        h.update(f"split:{len(texts)}\n".encode())
        for t in texts:
            b = t.encode("utf-8", errors="surrogatepass")
            h.update(f"{len(b)}:".encode())
            h.update(b)
    return h.hexdigest()


def digest_folder(folder: Path) -> str:
    """SHA-256 over every file of a local model folder (weights, config, tokenizer files), by
    relative path: a retrained or edited copy at the same path is a different model."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and not q.name.startswith(".")):
        h.update(f"{p.relative_to(folder).as_posix()}\n".encode())
        with p.open("rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def key_of(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"format": FORMAT, **parts}, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, still correct (atomic writes), may encode twice
        yield
        return
    with lock_path.open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _read(path: Path, key: str) -> dict[str, Tensor] | None:
    """The entry's tensors, or None when it is missing, unreadable or was written for another key
    (a truncated copy from elsewhere, a hash-prefix clash): such an entry is rebuilt."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            return {name: f.get_tensor(name) for name in f.keys()}
    except Exception:  # any damage means "not cached", never a failed run
        return None


def _write(path: Path, key: str, tensors: dict[str, Tensor], describe: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                  metadata={"key": key, "describe": json.dumps(describe, sort_keys=True)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached(cache_dir: str | os.PathLike, parts: dict[str, Any], build: Callable[[], dict[str, Tensor]],
           what: str = "features") -> dict[str, Tensor]:
    """The tensors stored under the key of `parts`, built by `build()` (and stored) on a miss.

    Logs one line: which entry is reused, or that it is being built."""
    root = Path(os.path.expanduser(str(cache_dir)))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GenexpError(f"model.cache_dir={cache_dir} cannot be created ({e.strerror}): set model.cache_dir=<writable "
                          f"folder> or GENEXP_CACHE") from None
    key = key_of(parts)
    path = root / f"{key[:40]}.safetensors"
    found = _read(path, key)
    if found is not None:
        log.info("%s: reusing cache entry %s", what, path)
        return found
    with _exclusive(root / f"{path.name}.lock"):
        # Another process may have built it while this one waited for the lock.
        found = _read(path, key)
        if found is not None:
            log.info("%s: reusing cache entry %s (built by another process meanwhile)", what, path)
            return found
        log.info("%s: building cache entry %s", what, path)
        tensors = build()
        _write(path, key, tensors, parts)
    return tensors
