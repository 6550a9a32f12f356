"""SIGINT/SIGTERM while the frozen encoder's features are being built (minutes on a CPU) stop the
run within a batch: the cache is left without the entry (never half of one), its lock is free,
and the next run builds the entry as if nothing had happened."""
from __future__ import annotations

import csv
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock, Timeout
from helpers import train_cfg
from test_frozen_encoder import TEST_TEXTS, TEXTS, _data, _save_tiny_bert

from genexp.data import feature_cache, features
from genexp.models.frozen import frozen_features
from genexp.train.build import encode_frozen
from genexp.train.interrupt import Interrupted, StopOnSignal


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return _save_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny", seed=0)


def _leftovers(cache: Path) -> list[str]:
    """What a stopped build must not leave: an entry, or the temp file of a half-written one."""
    return sorted(p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def _lock_is_free(cache: Path) -> bool:
    for path in cache.rglob("*.lock"):
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        lock.release()
    return True


def test_a_sigterm_while_encoding_stops_within_a_batch_and_leaves_no_entry(bert, tmp_path, monkeypatch):
    cfg = train_cfg("model=hf_encoder", "model.freeze=true", f"model.name_or_path={bert}", "model.encode_batch_size=1",
                    f"model.cache_dir={tmp_path / 'cache'}", "model.text_encoder.max_length=16", "device=cpu",
                    "progress=false", "steps=7")
    pooled = []
    real_pool = features.pool

    def pool_then_signal(*a, **k):
        pooled.append(1)
        if len(pooled) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as Slurm would, mid-encoding
        return real_pool(*a, **k)

    monkeypatch.setattr(features, "pool", pool_then_signal)
    threads = torch.get_num_threads()
    with StopOnSignal(), pytest.raises(Interrupted) as stopped:
        encode_frozen(_data(), cfg)
    assert stopped.value.signum == signal.SIGTERM and stopped.value.total == 7
    assert len(pooled) == 2, "batches after the signal ran all the same"
    assert _leftovers(tmp_path / "cache") == [] and _lock_is_free(tmp_path / "cache")
    assert torch.get_num_threads() == threads  # the encoding's own thread count was undone

    monkeypatch.setattr(features, "pool", real_pool)
    data = frozen_features(_data(), cfg)  # no signal now: the entry is built whole
    assert data.x_train.shape == (len(TEXTS), 16) and data.x_test.shape == (len(TEST_TEXTS), 16)
    assert len(_leftovers(tmp_path / "cache")) == 1
    assert torch.equal(frozen_features(_data(), cfg).x_train, data.x_train)  # and read back as written


def test_a_signal_while_waiting_for_another_process_s_encoding_stops_the_wait(bert, tmp_path):
    cfg = train_cfg("model=hf_encoder", "model.freeze=true", f"model.name_or_path={bert}",
                    f"model.cache_dir={tmp_path}", "model.text_encoder.max_length=16", "device=cpu", "progress=false")
    frozen_features(_data(), cfg)  # the lock file's name is the entry's
    (entry,) = tmp_path.glob("*.safetensors")
    entry.unlink()
    with open(f"{entry}.lock", "w") as held:  # what a process busy encoding holds
        fcntl.flock(held, fcntl.LOCK_EX)
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
        # Let a wait that ignored the signal end (and fail below) rather than hang.
        unlock = threading.Timer(15.0, fcntl.flock, (held, fcntl.LOCK_UN))
        unlock.start()
        with StopOnSignal(), pytest.raises(Interrupted):
            timer.start()
            started = time.monotonic()
            encode_frozen(_data(), cfg)
        waited = time.monotonic() - started
        unlock.cancel()
    timer.join()
    assert waited < 5, f"waited {waited:.1f} s after the signal came at 1 s"
    assert not entry.exists()


def test_the_encoding_uses_every_usable_core_whatever_cpu_threads_says(bert, tmp_path, monkeypatch):
    seen = []
    real = features.encode_texts

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return real(*a, **k)

    monkeypatch.setattr(features, "encode_texts", spy)
    monkeypatch.setattr("genexp.train.build.usable_cores", lambda: 3)
    cfg = train_cfg("model=hf_encoder", "model.freeze=true", f"model.name_or_path={bert}", "model.encode_batch_size=4",
                    f"model.cache_dir={tmp_path}", "model.text_encoder.max_length=16", "device=cpu", "progress=false")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # cpu_threads=1
    try:
        encode_frozen(_data(), cfg)
        assert seen == [3, 3] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


# --- A real `genexp train` process, MiniLM on real tweets ----------------------------------------

N_TWEETS = 400
STOP_WITHIN_S = 10


def _tweets_csv(path: Path) -> Path:
    from genexp.data.tweets import load_tweets

    d = load_tweets(test_fraction=0.1, val_size=100)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(d.x_train[:N_TWEETS], d.y_train[:N_TWEETS].tolist()))
    return path


def _start(tmp_path: Path, csv_path: Path) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"log{len(list(tmp_path.glob('log*')))}.txt"
    args = ["experiment=sentiment_frozen", "dataset=text", f"dataset.path={csv_path}", "dataset.val_size=50",
            "labels=100", "steps=10", "eval_every=5", "checkpoint_every=10", "progress=false", "cpu_threads=1",
            "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GENEXP_CACHE": str(tmp_path / "cache")}
    with log.open("w") as out:
        p = subprocess.Popen([sys.executable, "-m", "genexp", "train", *args], cwd=tmp_path, stdout=out,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env)
    return p, log


def _wait_for(p: subprocess.Popen, log: Path, text: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert p.poll() is None, f"exited {p.returncode} before {text!r}:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_during_the_first_encoding_exits_in_seconds_and_the_next_run_encodes(tmp_path):
    csv_path = _tweets_csv(tmp_path / "tweets.csv")
    p, log = _start(tmp_path, csv_path)
    try:
        _wait_for(p, log, "building cache entry")
        time.sleep(0.5)  # into loading the encoder and tokenising, or the first batches
        sent = time.monotonic()
        p.send_signal(signal.SIGTERM)
        code = p.wait(timeout=120)
        took = time.monotonic() - sent
    finally:
        if p.poll() is None:
            p.kill()
    out = log.read_text()
    assert code == 143, out[-2000:]
    assert took < STOP_WITHIN_S, f"exited {took:.1f} s after SIGTERM"
    assert "interrupted by SIGTERM before training started: nothing was written" in out
    assert "Traceback" not in out and "encoded" not in out
    assert _leftovers(tmp_path / "cache") == [] and _lock_is_free(tmp_path / "cache")
    assert not (tmp_path / "run").exists()

    p, log = _start(tmp_path, csv_path)
    timer = threading.Timer(600, p.kill)
    timer.start()
    try:
        code = p.wait()
    finally:
        timer.cancel()
    out = log.read_text()
    assert code == 0, out[-2000:]
    assert "features: building cache entry" in out and "rebuilding" not in out
    assert f"encoded {N_TWEETS} texts" in out
    (entry,) = (tmp_path / "cache").rglob("*.safetensors")
    from safetensors import safe_open

    with safe_open(str(entry), framework="pt") as f:
        key = f.metadata()["key"]
    tensors, why = feature_cache._read(entry, key)  # whole, and its tensors match their checksum
    assert why is None and sum(len(t) for t in tensors.values()) == N_TWEETS
