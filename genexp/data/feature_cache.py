"""An on-disk cache of encoded text features: one safetensors file per key.

A key is the SHA-256 of everything the features depend on (the caller lists it), so a changed
model, tokenizer setting, pooling or text gives a new entry and never a stale one. The key covers
the inputs; a SHA-256 of the stored tensors (in the entry's metadata, checked on every read)
covers the bytes, so a damaged entry (a flipped bit, a shifted or truncated data section) is
rebuilt, never read as wrong numbers. Entries are written to a temp file and renamed, so a reader
sees a whole file or none; a lock file next to the entry (`filelock`: POSIX and Windows) makes
parallel sweep workers that start together encode once: the first builds, the others wait on the
lock and then read what it wrote.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from genexp.errors import GenexpError
from genexp.runs.files import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

# Bump when the stored layout or the meaning of a stored tensor changes.
# 2: entries carry `sha256`, a checksum of their tensors.
FORMAT = 2


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
        h.update(bytes.fromhex(sha256_file(p)))
    return h.hexdigest()


def key_of(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"format": FORMAT, **parts}, sort_keys=True).encode()).hexdigest()


def digest_tensors(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over the tensors by name, with dtype and shape: what an entry's bytes must hash to."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _read(path: Path, key: str) -> tuple[dict[str, Tensor] | None, str | None]:
    """(the entry's tensors, None), or (None, why it is not used): missing, unreadable, damaged
    (its tensors do not hash to the checksum it was written with) or written for another key (a
    copy from elsewhere, a hash-prefix clash). Such an entry is rebuilt."""
    if not path.is_file():
        return None, None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None, "it was written for another key"
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # any damage means "not cached", never a failed run
        return None, f"it is unreadable ({type(e).__name__})"
    if meta.get("sha256") != digest_tensors(tensors):
        return None, "its content does not match its checksum"
    return tensors, None


def _write(path: Path, key: str, tensors: dict[str, Tensor], describe: dict[str, Any]) -> None:
    from safetensors.torch import save

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    data = save(tensors, metadata={"key": key, "sha256": digest_tensors(tensors),
                                   "describe": json.dumps(describe, sort_keys=True)})
    atomic_write_bytes(path, data)


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
    found, why = _read(path, key)
    if found is not None:
        log.info("%s: reusing cache entry %s", what, path)
        return found
    from filelock import FileLock

    with FileLock(str(root / f"{path.name}.lock")):
        # Another process may have built (or rebuilt) it while this one waited for the lock.
        found, why_now = _read(path, key)
        if found is not None:
            log.info("%s: reusing cache entry %s (built by another process meanwhile)", what, path)
            return found
        why = why_now or why
        if why:
            log.warning("%s: rebuilding cache entry %s: %s", what, path, why)
        else:
            log.info("%s: building cache entry %s", what, path)
        tensors = build()
        _write(path, key, tensors, parts)
    return tensors
