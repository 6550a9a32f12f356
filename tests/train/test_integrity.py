"""Issue 26: caches that cannot lie, checkpoints that name their run, records that survive a full
disk and say which data they were trained on, and the best-validation weights kept.

Numbered as the issue's items. Runs go through `genexp train` in this process (conftest's `in_process`):
a few tiny runs on the default digits data, so that monkeypatched faults (a full disk) reach them.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_mnist_pickle

from genexp.errors import GenexpError

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

TINY = ["steps=4", "eval_every=2", "checkpoint_every=2", "progress=false", "cpu_threads=1", "labels=20"]


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# 3 -------------------------------------------------------------------------------------------

def test_damaged_feature_cache_entry_is_rebuilt_never_reused(tmp_path, caplog, umask_022):
    from genexp.data.feature_cache import cached, digest_texts

    texts = [f"text number {i}" for i in range(80)]
    parts = {"encoder": "stand-in", "texts_sha256": digest_texts(texts[:60], texts[60:])}
    builds = []

    def build() -> dict[str, torch.Tensor]:
        builds.append(1)
        g = torch.Generator().manual_seed(0)
        return {"train": torch.randn(60, 8, generator=g), "test": torch.randn(20, 8, generator=g)}

    first = cached(tmp_path, parts, build)
    (entry,) = tmp_path.glob("*.safetensors")
    assert _mode(entry) == 0o644  # 0666 minus the umask, not mkstemp's 0600
    clean = entry.read_bytes()
    header = 8 + int.from_bytes(clean[:8], "little")  # safetensors: u64 header length, JSON header, data

    flipped = bytearray(clean)
    flipped[header + 100] ^= 0x01  # one bit of one float
    shifted = clean[:header] + b"\0\0\0\0" + clean[header:-4]  # the data section moved by 4 bytes, same size
    for damaged in (bytes(flipped), shifted, clean[:-10]):
        entry.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="genexp.data.feature_cache"):
            again = cached(tmp_path, parts, build)
        assert all(torch.equal(again[k], first[k]) for k in first)
        assert any("rebuilding cache entry" in r.message for r in caplog.records), caplog.text
    assert len(builds) == 4
    cached(tmp_path, parts, build)  # the last rebuild was stored whole: reused
    assert len(builds) == 4
    assert not _temp_files(tmp_path)


def test_feature_cache_runs_without_hashlib_file_digest(tmp_path, monkeypatch):
    # hashlib.file_digest is Python 3.11+; genexp supports 3.10.
    from genexp.data.feature_cache import digest_folder

    (tmp_path / "model.bin").write_bytes(b"weights")
    expected = digest_folder(tmp_path)
    monkeypatch.delattr(hashlib, "file_digest", raising=False)
    assert digest_folder(tmp_path) == expected


# 6 -------------------------------------------------------------------------------------------

def test_mnist_cache_and_source_are_verified_every_run(tmp_path, caplog, umask_022):
    from genexp.data.mnist import load_mnist

    src = tmp_path / "m.pkl.gz"
    sha, _ = write_mnist_pickle(src)
    cache_dir = tmp_path / "cache"
    first = load_mnist(file=str(src), sha256=sha, cache_dir=str(cache_dir), val_size=5)
    (cache,) = cache_dir.glob("mnist-*.npz")
    assert _mode(cache) == 0o644
    clean = cache.read_bytes()
    flipped = bytearray(clean)
    flipped[len(clean) // 2] ^= 0xFF
    for damaged in (bytes(flipped), clean[: len(clean) // 2]):
        cache.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="genexp.data.mnist"):
            again = load_mnist(file=str(src), sha256=sha, cache_dir=str(cache_dir), val_size=5)
        assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_test, first.y_test)
        assert any("rebuilding" in r.message for r in caplog.records), caplog.text
    # A tampered source is refused although the cache holds the arrays of the original.
    tampered = bytearray(src.read_bytes())
    tampered[-20] ^= 0x01
    src.write_bytes(bytes(tampered))
    with pytest.raises(GenexpError, match="SHA-256"):
        load_mnist(file=str(src), sha256=sha, cache_dir=str(cache_dir), val_size=5)


def test_foreign_checkpoints_are_refused_with_exit_2(tmp_path, in_process, capsys):
    from omegaconf import OmegaConf

    from genexp.train.checkpoint import run_id

    assert in_process(*TINY, "hydra.run.dir=a") == 0
    assert in_process(*TINY[1:], "steps=6", "hydra.run.dir=b") == 0
    assert in_process(*TINY, "model.widths=[7]", "hydra.run.dir=c") == 0

    def unfinished_with(run: str, checkpoint: dict) -> Path:
        d = tmp_path / run
        record = json.loads((d / "result.json").read_text())
        (d / "result.json").write_text(json.dumps({**record, "status": "running"}))
        torch.save(checkpoint, d / "checkpoint.pt")
        return d

    ck_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    capsys.readouterr()
    # Another step count (b differs from a in steps only): refused, not "resuming at step 4 of 6".
    b = unfinished_with("b", ck_a)
    before = {p: p.read_bytes() for p in b.rglob("*") if p.is_file()}
    assert in_process(f"resume={b}") == 2
    (line,) = _error_lines(capsys)
    assert "belongs to another run" in line
    assert {p: p.read_bytes() for p in b.rglob("*") if p.is_file()} == before
    # Another architecture, even under this run's id: one line, exit 2 (was a crash, exit 1).
    c = tmp_path / "c"
    unfinished_with("c", {**ck_a, "run_id": run_id(OmegaConf.load(c / "config.yaml"))})
    assert in_process(f"resume={c}") == 2
    (line,) = _error_lines(capsys)
    assert "does not fit this run's model" in line


def test_malicious_checkpoint_error_does_not_advise_weights_only_false(tmp_path):
    from genexp.train.checkpoint import load_checkpoint

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > pwned.txt",))

    torch.save({"model": Payload()}, tmp_path / "checkpoint.pt")
    with pytest.raises(GenexpError) as e:
        load_checkpoint(tmp_path / "checkpoint.pt")
    assert "weights_only" not in str(e.value) and "system" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "pwned.txt").exists()


def test_resuming_onto_a_malicious_checkpoint_says_what_it_is(tmp_path, in_process, capsys):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > pwned.txt",))

    assert in_process(*TINY, "hydra.run.dir=a") == 0
    record = json.loads((tmp_path / "a" / "result.json").read_text())
    (tmp_path / "a" / "result.json").write_text(json.dumps({**record, "status": "running"}))
    torch.save({"model": Payload(), "optimizer": {}, "loop": {}}, tmp_path / "a" / "checkpoint.pt")
    capsys.readouterr()
    assert in_process("resume=a") == 2
    (line,) = _error_lines(capsys)
    assert "not a weights-only checkpoint" in line and "weights_only=False" not in line
    assert not (tmp_path / "pwned.txt").exists()


# 8 -------------------------------------------------------------------------------------------

def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_is_recorded_and_leaves_no_temp_files(tmp_path, in_process, capsys, monkeypatch):
    real_save = torch.save

    def save_half_then_full(obj, f, *a, **k):  # a checkpoint or best.pt: some bytes, then the disk is full
        if hasattr(f, "write"):
            f.write(b"\0" * 1000)
        else:
            Path(f).write_bytes(b"\0" * 1000)
        raise _enospc()

    monkeypatch.setattr(torch, "save", save_half_then_full)
    assert in_process(*TINY, "hydra.run.dir=full") == 1
    (line,) = _error_lines(capsys)
    run = tmp_path / "full"
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "failed" and "No space left on device" in record["reason"]
    assert "No space left on device" in line and "marked failed" in line
    assert not _temp_files(run) and not (run / "checkpoint.pt").exists()
    assert not (run / "error.log").exists() or (run / "error.log").stat().st_size > 0
    monkeypatch.setattr(torch, "save", real_save)

    # The disk fills up after the run began: the failure cannot be recorded either.
    real_fsync, calls = os.fsync, []

    def fsync_until_full(fd):
        calls.append(fd)
        if len(calls) > 1:  # the first is result.json's `running` record
            raise _enospc()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_until_full)
    assert in_process(*TINY, "hydra.run.dir=full2") == 1
    monkeypatch.setattr(os, "fsync", real_fsync)
    (line,) = _error_lines(capsys)
    run = tmp_path / "full2"
    assert json.loads((run / "result.json").read_text())["status"] == "running"
    assert "stale" in line and str(run / "result.json") in line and "No space left on device" in line
    assert not _temp_files(run)


# 9 -------------------------------------------------------------------------------------------

def test_records_carry_a_fingerprint_of_their_data(tmp_path, in_process):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 6)).astype(np.float32), np.arange(120) % 3
    np.savez(tmp_path / "data.npz", x=x, y=y)
    args = [*TINY, "dataset=npz", "dataset.path=data.npz", "model.widths=[8]"]
    assert in_process(*args, "seed=0", "hydra.run.dir=s0") == 0
    assert in_process(*args, "seed=1", "hydra.run.dir=s1") == 0
    y2 = y.copy()
    y2[:10] = (y2[:10] + 1) % 3  # the labels of the file change
    np.savez(tmp_path / "data.npz", x=x, y=y2)
    assert in_process(*args, "seed=1", "hydra.run.dir=s1b") == 0
    fp = {r: json.loads((tmp_path / r / "result.json").read_text())["data_fingerprint"] for r in ("s0", "s1", "s1b")}
    assert fp["s0"] == fp["s1"]  # the seed changes the training, not the data
    assert fp["s1b"] != fp["s1"] and len(fp["s1b"]) == 16


# 10 ------------------------------------------------------------------------------------------

def test_best_pt_holds_the_weights_behind_the_reported_test_acc(tmp_path, in_process):
    from omegaconf import OmegaConf

    from genexp.train.loop import evaluate
    from genexp.train.setup import prepare, setup_run

    assert in_process(*TINY[1:], "steps=8", "hydra.run.dir=run") == 0
    run = tmp_path / "run"
    result = json.loads((run / "result.json").read_text())
    best = torch.load(run / "best.pt", weights_only=True)
    assert (best["step"], best["val_acc"], best["test_acc"]) == (result["best_step"], result["val_acc"],
                                                                  result["test_acc"])
    # The docs' recipe: the run's own config and split, its model, these weights.
    cfg = OmegaConf.load(run / "config.yaml")
    setup = setup_run(cfg, prepare(cfg), split_file=run / "split.json")
    setup.model.load_state_dict(best["model"])
    acc, _ = evaluate(setup.model, setup.test.x, setup.test.y, setup.test.mask, setup.amp, setup.data.preprocess)
    assert acc == pytest.approx(result["test_acc"])

    # A resumed run rewrites best.pt from its checkpoint: a later best written by a lost session is not kept.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    torch.save({"model": {}, "step": 999, "val_acc": 1.0, "test_acc": 1.0}, copy / "best.pt")
    (copy / "result.json").write_text(json.dumps({**result, "status": "running"}))
    assert in_process(f"resume={copy}") == 0
    again = torch.load(copy / "best.pt", weights_only=True)
    assert again["step"] == result["best_step"] and again["model"].keys() == best["model"].keys()
