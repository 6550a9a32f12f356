"""Frozen-encoder features: every text encoded once by a pretrained HF encoder, pooled to one
vector, cached on disk (`genexp.data.feature_cache`).

With `model.freeze=true` this replaces tokenisation in `build_dataset`: the dataset comes back
as float vectors (no mask), so the trained model is a head on vectors and every perturbation
acts on the pooled feature.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from genexp.data.dataset import Dataset
from genexp.data.feature_cache import cached, digest_folder, digest_texts
from genexp.errors import GenexpError

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")


def pool(hidden: Tensor, mask: Tensor, pooling: str = "mean", normalize: bool = True) -> Tensor:
    """One vector per text from the last hidden states (B, T, H) and the attention mask (B, T)."""
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        # clamp: an all-padding row (cannot come from a tokenizer, which adds [CLS]) stays zero.
        out = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    elif pooling == "cls":
        out = hidden[:, 0]
    else:
        raise GenexpError(f"model.pooling={pooling!r} is unknown: use {' or '.join(POOLINGS)}")
    if normalize:
        out = torch.nn.functional.normalize(out, dim=-1)
    return out


def encoder_identity(name_or_path: str) -> dict[str, str]:
    """What names the encoder's weights for the cache key: a local folder's resolved path and a
    hash of its files, or a hub model's name and the commit its cached files come from."""
    from genexp.data.pretrained import offline, resolve_name_or_path

    path = resolve_name_or_path(name_or_path)
    if Path(path).is_dir():
        return {"model": path, "files_sha256": digest_folder(Path(path))}
    from transformers.utils.hub import cached_file, extract_commit_hash

    try:
        config = cached_file(path, "config.json", local_files_only=offline())
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise GenexpError(f"model.name_or_path={name_or_path}: cannot resolve its revision ({first[:200]}): set "
                          f"model.name_or_path=<local folder> or minilm") from None
    commit = extract_commit_hash(config, None)
    if commit is None:  # no snapshot layout: fall back to hashing what the config points to
        return {"model": path, "files_sha256": digest_folder(Path(config).parent)}
    return {"model": path, "revision": commit}


# Texts tokenised per call: a fast tokenizer's call on 20k tweets holds the interpreter for
# seconds, in which a signal's handler (genexp.train.interrupt.stop_at_once, around the trainer's call) cannot run.
TOKENIZE_CHUNK = 2048


def encode_texts(texts: Sequence[str], encoder: torch.nn.Module, tokenizer: Any, *, max_length: int,
                 pooling: str = "mean", normalize: bool = True, batch_size: int = 64,
                 device: torch.device | str = "cpu", progress: Any = None) -> Tensor:
    """(N, H) float32 pooled features, rows in the order of `texts`.

    Texts are batched by token length (longest first, so the memory peak comes at once) and
    padded per batch: on short tweets with a few long ones this avoids most padded compute."""
    enc: dict[str, list] = {}
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        part = tokenizer(list(texts[start:start + TOKENIZE_CHUNK]), truncation=True, max_length=max_length)
        for k, v in part.items():
            enc.setdefault(k, []).extend(v)
    ids = enc.get("input_ids", [])
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out: Tensor | None = None
    encoder.eval()
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = tokenizer.pad({k: [enc[k][i] for i in rows] for k in enc.keys()}, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        # inference_mode, not no_grad: less bookkeeping per op. Its tensors could not enter the head's
        # autograd graph later, so they are copied into `out`, made outside it.
        with torch.inference_mode():
            hidden = encoder(**batch).last_hidden_state
            feats = pool(hidden.float(), batch["attention_mask"], pooling, normalize).cpu()
        if out is None:
            out = torch.empty(len(ids), feats.shape[1], dtype=torch.float32)
        out[torch.as_tensor(rows)] = feats
        if progress is not None:
            progress.advance(len(rows))
    assert out is not None
    return out


class _Counter:
    """Progress over both splits (one bar, ETA from the texts encoded so far), and a log line every
    ~10 % or 30 s: an encoding of minutes is otherwise silent in a redirected log."""

    def __init__(self, bar: Any, total: int) -> None:
        from genexp.runs.progress import Every, Pace

        self.bar, self.done, self.total = bar, 0, total
        self.pace, self.every = Pace(total, unit="texts"), Every(total)

    def advance(self, n: int) -> None:
        self.done += n
        self.bar.tick(self.done)
        if self.every.due(self.done) and self.done < self.total:  # the last line says "encoded ... in"
            self.bar.note(log, "encoding texts: %d/%d (%d%%) | %s", self.done, self.total,
                          100 * self.done // self.total, self.pace.text(self.done))


def hf_features(data: Dataset, name_or_path: str, max_length: int = 128, pooling: str = "mean",
                normalize: bool = True, batch_size: int = 64, cache_dir: str = "~/.cache/genexp/features",
                device: str = "auto", progress: bool = True, threads: int | None = None) -> Dataset:
    """Replace the dataset's texts by pooled encoder features (from the cache when it holds them).

    `threads`: CPU threads for the encoding (None: torch's current count), set back afterwards. The
    trainer passes every core this process may use, whatever the training's `cpu_threads`: the
    encoding runs once, before any run of a sweep trains (the others wait on the cache's lock)."""
    from genexp.runs.progress import TrainProgress

    if not isinstance(max_length, int) or max_length < 2:
        raise GenexpError(f"model.text_encoder.max_length={max_length} must be an integer >= 2")
    if pooling not in POOLINGS:
        raise GenexpError(f"model.pooling={pooling!r} is unknown: use {' or '.join(POOLINGS)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise GenexpError(f"model.encode_batch_size={batch_size} must be an integer >= 1")
    if not isinstance(data.x_train, list) or not isinstance(data.x_test, list):
        raise GenexpError("model.freeze=true needs a text dataset: use dataset=tweets, imdb or text")
    parts = {"encoder": encoder_identity(name_or_path),
             "tokenizer": {"max_length": max_length, "truncation": True},
             "pooling": pooling, "normalize": bool(normalize), "dtype": "float32",
             "texts_sha256": digest_texts(data.x_train, data.x_test),
             "n": [len(data.x_train), len(data.x_test)]}

    def build() -> dict[str, Tensor]:
        from genexp.data.pretrained import load_pretrained

        dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                           ("cpu" if device == "auto" else device))
        tokenizer = load_pretrained("tokenizer", name_or_path)
        encoder = load_pretrained("encoder", name_or_path, dtype=torch.float32).to(dev)
        encoder.requires_grad_(False)
        started = time.perf_counter()
        total = len(data.x_train) + len(data.x_test)
        training_threads = torch.get_num_threads()
        if dev.type == "cpu" and threads is not None:
            torch.set_num_threads(threads)
        try:
            log.info("features: encoding %d texts on %s (%d threads, batches of %d)", total, dev,
                     torch.get_num_threads(), batch_size)
            with TrainProgress(total, enabled=progress, label="encode") as bar:
                counter = _Counter(bar, total)
                kw = dict(max_length=max_length, pooling=pooling, normalize=normalize, batch_size=batch_size,
                          device=dev, progress=counter)
                train = encode_texts(data.x_train, encoder, tokenizer, **kw)
                test = encode_texts(data.x_test, encoder, tokenizer, **kw)
            log.info("features: encoded %d texts in %.1f s on %s (%d threads)", total, time.perf_counter() - started,
                     dev, torch.get_num_threads())
        finally:
            torch.set_num_threads(training_threads)
        return {"train": train, "test": test}

    feats = cached(os.path.expanduser(cache_dir), parts, build)
    data.x_train, data.x_test = feats["train"], feats["test"]
    data.mask_train = data.mask_test = None
    # Marks the dataset as frozen-encoder features for build_model (a head on vectors).
    data.frozen_features = parts
    return data
