"""Real-dataset loaders on small files they write: CIFAR-10 in its real (Python 2 pickle) format,
IMDB as save_to_disk / parquet / CSV, and the user formats (npz, csv, imagefolder, text),
including every bad-file case through the real CLI (exit code 2, one line)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Py2Pickler, genexp, train_cfg

from genexp.data.augment import TranslateFlip, translate_flip
from genexp.errors import GenexpError

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- CIFAR-10 in the real format ------------------------------------------------------------

def write_fake_cifar(root: Path, per_batch: int = 20, n_test: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(obj, name):
        with open(folder / name, "wb") as f:
            Py2Pickler(f, protocol=2).dump(obj)

    def batch(n, label):
        return {b"batch_label": label.encode(), b"labels": [int(i % 10) for i in range(n)],
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"filenames": [f"img_{i}.png".encode() for i in range(n)]}

    for i in range(1, 6):
        dump(batch(per_batch, f"training batch {i} of 5"), f"data_batch_{i}")
    dump(batch(n_test, "testing batch 1 of 1"), "test_batch")
    dump({b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_cases_per_batch": per_batch, b"num_vis": 3072},
         "batches.meta")
    return root


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("cifar"))


def test_fake_cifar_is_the_real_format(cifar_root):
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert raw[b"data"].dtype == np.uint8 and raw[b"data"].shape == (20, 3072) and len(raw[b"labels"]) == 20


def test_cifar_reads_the_python_batches(cifar_root):
    from genexp.data.cifar10 import load_cifar10, read_cifar10

    (x_train, y_train), (x_test, y_test), classes = read_cifar10(cifar_root, verify_md5=False)
    assert classes == CIFAR_NAMES
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(cifar_root / "cifar-10-batches-py" / name, "rb") as f:
            batches.append(pickle.load(f, encoding="bytes"))  # the test's own fixture: the reference reader
    assert np.array_equal(x_train.reshape(len(x_train), -1), np.concatenate([b[b"data"] for b in batches]))
    assert y_train.tolist() == sum((b[b"labels"] for b in batches), [])
    data = load_cifar10(root=str(cifar_root), verify_md5=False)
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (100, 3, 32, 32)
    assert data.x_test.shape == (20, 3, 32, 32) and data.num_classes == 10 and data.class_names == CIFAR_NAMES
    # The stored CHW uint8 pixels are the file's bytes (data rows are R, G, B planes of 32x32).
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert torch.equal(data.x_train[0].flatten(), torch.from_numpy(raw[b"data"][0]))
    assert data.y_train[:3].tolist() == raw[b"labels"][:3]
    x = data.preprocess(data.x_train)
    assert x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2)
    assert isinstance(data.augment, TranslateFlip) and data.augment.max_shift == 2


def test_cifar_checks_md5_by_default_and_names_the_fix(cifar_root, tmp_path):
    from genexp.data.cifar10 import load_cifar10

    with pytest.raises(GenexpError, match="MD5.*dataset.verify_md5=false"):
        load_cifar10(root=str(cifar_root))
    with pytest.raises(GenexpError, match="dataset.download=true.*dataset.root="):
        load_cifar10(root=str(tmp_path / "empty"))
    with pytest.raises(GenexpError, match="dataset.normalize"):
        load_cifar10(root=str(cifar_root), verify_md5=False, normalize="pca")


def test_cifar_one_training_step_through_train(cifar_root, tmp_path):
    from genexp.train.loop import train

    cfg = train_cfg("dataset=cifar10", f"dataset.root={cifar_root}", "dataset.verify_md5=false", "dataset.val_size=10",
                    "model=cnn13", "model.widths=[4,4,4,4,4]", "method=vat", "labels=20", "steps=1", "eval_every=1",
                    "batch_size=4", "unlabeled_batch_size=4", "progress=false", "device=cpu")
    result = train(cfg, tmp_path)
    assert result["status"] == "completed" and result["dataset"] == "cifar10" and result["n_test"] == 20
    assert result["n_labeled"] == 20 and result["n_unlabeled"] == 70


# --- augmentation ---------------------------------------------------------------------------

def _reference(x, dy, dx, flip, s=2):
    """One image at a time with F.pad + crop + flip: what translate_flip batches."""
    padded = torch.nn.functional.pad(x.unsqueeze(0), (s, s, s, s), mode="reflect")[0]
    h, w = x.shape[1:]
    if flip:
        padded = padded.flip(-1)
        dx = 2 * s - dx  # mirroring the padded image mirrors the offset
    return padded[:, dy:dy + h, dx:dx + w]


def test_translate_flip_shapes_determinism_and_content():
    x = torch.randn(32, 3, 9, 7)
    a = translate_flip(x, torch.Generator().manual_seed(1))
    b = translate_flip(x, torch.Generator().manual_seed(1))
    c = translate_flip(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Every output image is some (dy, dx, flip) of the reference crop, and all kinds occur.
    seen: dict[int, set] = {i: set() for i in range(len(x))}
    for dy in range(5):
        for dx in range(5):
            for f in (False, True):
                ref = torch.stack([_reference(img, dy, dx, f) for img in x])
                for i in (ref == a).flatten(1).all(1).nonzero().flatten().tolist():
                    seen[i].add((dy, dx, f))
    assert all(seen.values()), "some image is no translation/flip of its input"
    combos = set().union(*seen.values())
    assert {f for _, _, f in combos} == {False, True}
    assert len({(dy, dx) for dy, dx, _ in combos}) > 5


def test_translate_only_and_flip_only():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    flipped = translate_flip(x.repeat(32, 1, 1, 1), torch.Generator().manual_seed(0), max_shift=0, flip=True)
    for i, img in enumerate(flipped):
        assert torch.equal(img, x[i % 2]) or torch.equal(img, x[i % 2].flip(-1))
    assert not torch.equal(flipped, x.repeat(32, 1, 1, 1))
    moved = translate_flip(x.repeat(32, 1, 1, 1), torch.Generator().manual_seed(0), max_shift=1, flip=False)
    assert any(not torch.equal(img, x[i % 2]) for i, img in enumerate(moved))
    assert torch.equal(translate_flip(x, None, max_shift=0, flip=False), x)


def test_augment_draws_from_the_trainers_generator():
    aug = TranslateFlip(2, True)
    x = torch.randn(8, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    first, second = aug(x, g), aug(x, g)
    assert not torch.equal(first, second)  # the generator advances
    assert torch.equal(first, aug(x, torch.Generator().manual_seed(0)))


# --- normalisation --------------------------------------------------------------------------

def test_zca_whitens_the_training_images_and_is_cached(tmp_path):
    from genexp.data.preprocess import cached_zca, image_preprocess

    g = torch.Generator().manual_seed(0)
    mix = torch.randn(12, 12, generator=g)
    base = torch.randn(4000, 12, generator=g) @ mix  # correlated pixels
    x = (base * 20 + 128).clamp(0, 255).to(torch.uint8).view(-1, 3, 2, 2)
    zca = cached_zca(x, 1e-8, tmp_path)
    white = zca(x).flatten(1).double()
    assert torch.allclose(white.mean(0), torch.zeros(12, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(white.T.cov(correction=0), torch.eye(12, dtype=torch.float64), atol=2e-2)
    # ZCA (unlike PCA whitening) stays close to the input: W is symmetric.
    assert torch.allclose(zca._cpu["matrix"], zca._cpu["matrix"].T, atol=1e-4)
    cached = list(tmp_path.glob("zca-*.pt"))
    assert len(cached) == 1
    again = cached_zca(x, 1e-8, tmp_path)
    assert torch.equal(again._cpu["matrix"], zca._cpu["matrix"])
    assert len(list(tmp_path.glob("zca-*.pt"))) == 1
    assert image_preprocess(x, "none")(x).max() <= 1.0
    with pytest.raises(GenexpError, match="dataset.normalize"):
        image_preprocess(x, "whiten")


# --- user data: npz, csv, imagefolder, text -----------------------------------------------------

def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_loader_with_unlabelled_rows_and_holdout(tmp_path):
    from genexp.data.npz import load_npz

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = np.repeat([0, 1, 2], 40)
    y[::4] = -1
    data = load_npz(str(_npz(tmp_path / "d.npz", x=x, y=y)), test_fraction=0.25)
    assert data.num_classes == 3 and data.x_train.dtype == torch.float32
    assert (data.y_test >= 0).all() and len(data.y_test) == round(0.25 * 30) * 3
    assert (data.y_train == -1).sum() == 30  # unlabelled rows all stay in training
    again = load_npz(str(tmp_path / "d.npz"), test_fraction=0.25)
    assert torch.equal(again.y_test, data.y_test) and torch.equal(again.x_test, data.x_test)
    # String labels, explicit test split, uint8 images scaled on the device.
    imgs = rng.integers(0, 256, (40, 1, 4, 4), dtype=np.uint8)
    labels = np.array(["cat", "dog"] * 20)
    d2 = load_npz(str(_npz(tmp_path / "i.npz", x=imgs, y=labels, x_test=imgs[:6], y_test=labels[:6])))
    assert d2.class_names == ["cat", "dog"] and d2.x_train.dtype == torch.uint8 and len(d2.y_test) == 6
    assert d2.preprocess(d2.x_train).max() <= 1.0


def test_csv_loader_standardises_with_training_stats(tmp_path):
    from genexp.data.tabular import load_csv

    rng = np.random.default_rng(0)
    lines = ["a,b,label"] + [f"{rng.normal() * 10 + 5},{rng.normal()},{'yes' if i % 2 else 'no'}" for i in range(60)]
    lines += [f"{rng.normal()},{rng.normal()}," for _ in range(10)]  # unlabelled rows
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    data = load_csv(str(tmp_path / "t.csv"))
    assert data.class_names == ["no", "yes"] and data.x_train.shape[1] == 2
    assert (data.y_train == -1).sum() == 10 and (data.y_test >= 0).all()
    assert torch.allclose(data.x_train.mean(0), torch.zeros(2), atol=1e-5)


def _png(path: Path, color, size=6) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)


def _imagefolder(root: Path, classes=("cat", "dog", "emu"), per_class=6) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            _png(root / name / f"{i}.png", (40 * c + i, 10 * i, 200 - 30 * c), size=6 + i % 3)
    return root


def test_imagefolder_loader(tmp_path):
    from genexp.data.imagefolder import load_imagefolder

    root = _imagefolder(tmp_path / "train")
    test_root = _imagefolder(tmp_path / "test", classes=("cat", "emu"), per_class=2)
    for i in range(5):
        _png(tmp_path / "unl" / "sub" / f"u{i}.jpg", (i, i, i))
    data = load_imagefolder(str(root), test_root=str(test_root), unlabeled_root=str(tmp_path / "unl"), image_size=8,
                            augment=True)
    assert data.class_names == ["cat", "dog", "emu"] and data.x_train.shape == (23, 3, 8, 8)
    assert data.x_train.dtype == torch.uint8 and (data.y_train == -1).sum() == 5
    assert data.y_test.tolist() == [0, 0, 2, 2]  # test class indices follow the training folders
    x = data.preprocess(data.x_train)
    assert x.dtype == torch.float32 and data.augment(x, torch.Generator().manual_seed(0)).shape == x.shape
    held = load_imagefolder(str(root), image_size=4, test_fraction=0.34, channels=1, normalize="zca")
    assert held.x_train.shape[1:] == (1, 4, 4) and len(held.y_test) == 6 and held.augment is None


def test_text_loader_csv_and_jsonl_with_string_labels(tmp_path):
    from genexp.data.textfile import load_text

    rows = [{"body": f"text number {i}", "sentiment": ["pos", "neg", "neutral"][i % 3]} for i in range(30)]
    rows.append({"body": "no label here", "sentiment": ""})
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_text(str(tmp_path / "t.jsonl"), text_column="body", label_column="sentiment", test_fraction=0.2)
    assert data.class_names == ["neg", "neutral", "pos"] and isinstance(data.x_train, list)
    assert len(data.x_test) == 6 and (data.y_train == -1).sum() == 1
    (tmp_path / "t.csv").write_text("text,label\n" + "".join(f"\"hello, {i}\",{i % 2}\n" for i in range(20)))
    (tmp_path / "test.csv").write_text("text,label\nbye,1\nbye again,0\n")
    d2 = load_text(str(tmp_path / "t.csv"), test_path=str(tmp_path / "test.csv"))
    assert d2.x_train[1] == "hello, 1" and d2.x_test == ["bye", "bye again"] and d2.y_test.tolist() == [1, 0]


# --- IMDB from local copies ---------------------------------------------------------------------

def _reviews(n, label=None):
    words = ["great", "awful", "movie", "plot", "boring", "loved"]
    return {"text": [f"review {i}: {words[i % 6]} {words[(i * 5) % 6]}<br />the end" for i in range(n)],
            "label": [(i % 2) if label is None else label for i in range(n)]}


def test_imdb_from_save_to_disk_folder(tmp_path):
    import datasets

    from genexp.data.imdb import load_imdb

    label = datasets.ClassLabel(names=["neg", "pos"])
    feats = datasets.Features({"text": datasets.Value("string"), "label": label})
    unsup_feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(_reviews(20), features=feats),
        "test": datasets.Dataset.from_dict(_reviews(8), features=feats),
        "unsupervised": datasets.Dataset.from_dict(_reviews(6, label=-1), features=unsup_feats)})
    dd.save_to_disk(str(tmp_path / "imdb"))
    data = load_imdb(str(tmp_path / "imdb"))
    assert data.class_names == ["neg", "pos"] and len(data.x_train) == 26 and len(data.x_test) == 8
    assert (data.y_train == -1).sum() == 6 and data.y_train[:4].tolist() == [0, 1, 0, 1]
    assert isinstance(data.x_train[0], str)
    assert len(load_imdb(str(tmp_path / "imdb"), unlabeled=False).x_train) == 20
    assert len(load_imdb(str(tmp_path / "imdb"), max_unlabeled=2).x_train) == 22


def test_imdb_from_parquet_and_csv(tmp_path):
    import pandas as pd

    from genexp.data.imdb import load_imdb

    pd.DataFrame(_reviews(40)).to_parquet(tmp_path / "all.parquet")
    data = load_imdb(str(tmp_path / "all.parquet"), test_fraction=0.25)
    assert len(data.x_test) == 10 and len(data.x_train) == 30 and data.num_classes == 2
    folder = tmp_path / "csvs"
    folder.mkdir()
    pd.DataFrame(_reviews(12)).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(_reviews(4)).to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"text": ["an unlabelled review"] * 3}).to_csv(folder / "unsupervised.csv", index=False)
    d2 = load_imdb(str(folder))
    assert len(d2.x_train) == 15 and len(d2.x_test) == 4 and (d2.y_train == -1).sum() == 3
    hub = tmp_path / "hub" / "plain_text"
    hub.mkdir(parents=True)
    pd.DataFrame(_reviews(10)).to_parquet(hub / "train-00000-of-00001.parquet")
    pd.DataFrame(_reviews(4)).to_parquet(hub / "test-00000-of-00001.parquet")
    assert len(load_imdb(str(tmp_path / "hub")).x_test) == 4


def test_imdb_hub_offline_is_one_line(monkeypatch, tmp_path):
    from genexp.data.imdb import load_imdb

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(GenexpError, match="dataset.path=imdb-not-cached"):
        load_imdb("imdb-not-cached")
    with pytest.raises(GenexpError, match="does not exist"):
        load_imdb(str(tmp_path / "nope"))


# --- the real CLI: end-to-end runs and every bad file, run concurrently ----------------------

FAST = ["steps=2", "eval_every=2", "batch_size=8", "unlabeled_batch_size=8", "progress=false", "labels=12",
        "model.widths=[16]"]


def _bad_and_good_files(root: Path) -> dict[str, list[str]]:
    """case -> CLI overrides. Cases starting with 'ok' must succeed; the rest must fail with exit 2."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    y = np.repeat([0, 1, 2], 30)
    y_unl = y.copy()
    y_unl[::5] = -1
    _npz(root / "ok.npz", x=x, y=y_unl)
    _npz(root / "ok_test.npz", x=x, y=y, x_test=x[:9], y_test=y[:9])
    _npz(root / "no_y.npz", x=x, labels=y)
    _npz(root / "one_class.npz", x=x, y=np.zeros(90, dtype=int))
    _npz(root / "text_x.npz", x=np.array([["a"] * 4] * 90), y=y)
    np.save(root / "objects.npy", np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
    (root / "objects.npz").write_bytes((root / "objects.npy").read_bytes())  # a pickle, not a zip
    with open(root / "evil.npz", "wb") as f:
        np.savez(f, x=np.array([object()] * 90, dtype=object), y=y)
    header = "f1,f2,label\n"
    (root / "ok.csv").write_text(header + "".join(f"{r[0]},{r[1]},{['a', 'b', 'c'][c]}\n" for r, c in zip(x, y)))
    (root / "nonnum.csv").write_text(header + "".join(f"{r[0]},oops,{c}\n" for r, c in zip(x, y)))
    (root / "onecls.csv").write_text(header + "".join(f"{r[0]},{r[1]},same\n" for r in x))
    (root / "blank.csv").write_text(header + "".join(f"{r[0]},,{c}\n" for r, c in zip(x, y)))
    (root / "text.csv").write_text("text,label\n" + "".join(f"words {i},{i % 2}\n" for i in range(40)))
    _imagefolder(root / "one_class_images", classes=("only",), per_class=3)
    return {
        "ok_npz": ["dataset=npz", f"dataset.path={root / 'ok.npz'}", "model=mlp"],
        "ok_npz_test": ["dataset=npz", f"dataset.path={root / 'ok_test.npz'}", "model=mlp"],
        "ok_csv": ["dataset=csv", f"dataset.path={root / 'ok.csv'}", "model=mlp"],
        "npz_missing_file": ["dataset=npz", f"dataset.path={root / 'nope.npz'}", "model=mlp"],
        "npz_path_unset": ["dataset=npz", "model=mlp"],
        "npz_missing_array": ["dataset=npz", f"dataset.path={root / 'no_y.npz'}", "model=mlp"],
        "npz_single_class": ["dataset=npz", f"dataset.path={root / 'one_class.npz'}", "model=mlp"],
        "npz_non_numeric": ["dataset=npz", f"dataset.path={root / 'text_x.npz'}", "model=mlp"],
        "npz_pickle_file": ["dataset=npz", f"dataset.path={root / 'objects.npz'}", "model=mlp"],
        "npz_object_array": ["dataset=npz", f"dataset.path={root / 'evil.npz'}", "model=mlp"],
        "csv_missing_file": ["dataset=csv", f"dataset.path={root / 'nope.csv'}", "model=mlp"],
        "csv_missing_label_column": ["dataset=csv", f"dataset.path={root / 'ok.csv'}", "dataset.label_column=y",
                                     "model=mlp"],
        "csv_non_numeric": ["dataset=csv", f"dataset.path={root / 'nonnum.csv'}", "model=mlp"],
        "csv_single_class": ["dataset=csv", f"dataset.path={root / 'onecls.csv'}", "model=mlp"],
        "csv_empty_feature": ["dataset=csv", f"dataset.path={root / 'blank.csv'}", "model=mlp"],
        "csv_missing_test_path": ["dataset=csv", f"dataset.path={root / 'ok.csv'}",
                                  f"dataset.test_path={root / 'nope_test.csv'}", "model=mlp"],
        "imagefolder_missing_root": ["dataset=imagefolder", f"dataset.root={root / 'nope'}", "model=mlp"],
        "imagefolder_single_class": ["dataset=imagefolder", f"dataset.root={root / 'one_class_images'}", "model=mlp"],
        "text_missing_file": ["dataset=text", f"dataset.path={root / 'nope.csv'}", "model=mlp"],
        "text_missing_column": ["dataset=text", f"dataset.path={root / 'text.csv'}", "dataset.text_column=body",
                                "model=mlp"],
        "text_single_class": ["dataset=text", f"dataset.path={root / 'onecls.csv'}", "dataset.text_column=f1",
                              "model=mlp"],
        "cifar_missing": ["dataset=cifar10", f"dataset.root={root / 'no_cifar'}", "model=mlp"],
        "imdb_missing_local": ["dataset=imdb", f"dataset.path={root / 'no_imdb'}", "model=mlp"],
    }


EXPECT = {  # case -> words the one error line must contain (the key to set)
    "npz_missing_file": ["dataset.path", "does not exist"], "npz_path_unset": ["dataset.path", "not set"],
    "npz_missing_array": ["'y'", "numpy.savez"], "npz_single_class": ["at least 2 classes"],
    "npz_non_numeric": ["non-numeric"], "npz_pickle_file": ["dataset.path", ".npz"],
    "npz_object_array": ["unpickling"], "csv_missing_file": ["dataset.path", "does not exist"],
    "csv_missing_label_column": ["dataset.label_column", "'y'"], "csv_non_numeric": ["'f2'", "dataset.drop_columns"],
    "csv_single_class": ["at least 2 classes"], "csv_empty_feature": ["'f2'", "empty"],
    "csv_missing_test_path": ["dataset.test_path", "does not exist"],
    "imagefolder_missing_root": ["dataset.root", "does not exist"],
    "imagefolder_single_class": ["single class"], "text_missing_file": ["dataset.path", "does not exist"],
    "text_missing_column": ["dataset.text_column", "'body'"], "text_single_class": ["at least 2 classes"],
    "cifar_missing": ["dataset.download=true", "dataset.root="], "imdb_missing_local": ["dataset.path", "does not exist"],
}


# One interpreter runs the real CLI entry point (genexp.cli.main -> Hydra -> train) once per case,
# capturing its stderr and exit code: importing torch costs seconds per process on a busy
# 2-core machine, and there are over 20 cases. A few cases also run as their own `genexp`
# process, to show the process-level exit code and stderr are the same.
DRIVER = r"""
import contextlib, io, json, os, sys
from hydra.core.global_hydra import GlobalHydra
from genexp.cli import main
cases_file, results_file = sys.argv[1:3]  # `genexp train` rewrites sys.argv
cases = json.loads(open(cases_file).read())
results = {}
for name, args in cases.items():
    # Undo what one invocation leaves in the process that a fresh `genexp` would not see.
    for var in ("HYDRA_FULL_ERROR", "GENEXP_TRACEBACK"):
        os.environ.pop(var, None)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    GlobalHydra.instance().clear()
    results[name] = {"rc": code, "stderr": err.getvalue()}
open(results_file, "w").write(json.dumps(results))
"""
STANDALONE = ("csv_non_numeric", "ok_npz")


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    root = tmp_path_factory.mktemp("userdata")
    cases = {name: ["train", *overrides, *FAST, f"hydra.run.dir={root / 'runs' / name}"]
             for name, overrides in _bad_and_good_files(root).items()}
    (root / "cases.json").write_text(json.dumps(cases))

    def batch():
        p = subprocess.run([sys.executable, "-c", DRIVER, str(root / "cases.json"), str(root / "results.json")],
                           cwd=root, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        assert p.returncode == 0, p.stderr[-3000:]
        return json.loads((root / "results.json").read_text())

    def standalone(name):
        args = [a.replace(f"runs/{name}", f"runs/{name}_process") for a in cases[name]]
        return name, genexp(*args, cwd=root)

    with ThreadPoolExecutor(max_workers=1 + len(STANDALONE)) as pool:
        batched = pool.submit(batch)
        alone = dict(pool.map(standalone, STANDALONE))
        results = batched.result()
    for name, p in alone.items():
        assert p.returncode == results[name]["rc"], (name, p.returncode, p.stderr[-2000:])
        if p.returncode:
            assert p.stderr.strip() == results[name]["stderr"].strip()
    return {name: (r["rc"], r["stderr"], root / "runs" / name) for name, r in results.items()}


@pytest.mark.parametrize("case", sorted(EXPECT))
def test_bad_user_file_is_one_line_exit_2(cli_runs, case):
    rc, stderr, _ = cli_runs[case]
    assert rc == 2, (rc, stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for word in EXPECT[case]:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("case", ["ok_npz", "ok_npz_test", "ok_csv"])
def test_user_files_train_end_to_end(cli_runs, case):
    rc, stderr, run_dir = cli_runs[case]
    assert rc == 0, stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["n_labeled"] == 12
    if case == "ok_npz":  # the 18 rows with y = -1 are in the unlabelled pool
        split = json.loads((run_dir / "split.json").read_text())
        assert result["n_test"] == 15 and len(split["unlabeled"]) >= 18
    if case == "ok_npz_test":
        assert result["n_test"] == 9


def test_stray_label_and_missing_text_are_refused(tmp_path):
    # Issue 14: a stray 99 among labels 0..9 silently became an 11th class; a jsonl row without
    # its text silently trained as an empty string.
    from genexp.data.textfile import load_text
    from genexp.data.userdata import encode_labels

    labels = [i % 10 for i in range(300)]
    y, _, names = encode_labels(labels, None, "dataset.path (y)")
    assert names == [str(i) for i in range(10)]
    with pytest.raises(GenexpError, match=r"the label 99 \(1 row\(s\), first row 7\).*0\.\.9.*stray"):
        encode_labels(labels[:7] + [99] + labels[8:], None, "dataset.path (y)")
    # Labels that are not consecutive but each have real support stay classes.
    assert encode_labels([0, 1, 5] * 20, None, "k")[2] == ["0", "1", "5"]
    rows = [{"text": f"text {i}", "label": i % 2} for i in range(20)]
    rows[4] = {"label": 1}
    rows[9] = {"text": None, "label": 0}
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(GenexpError, match=r"2 of 20 rows have no 'text' \(first: row 5\)"):
        load_text(str(tmp_path / "t.jsonl"))


def test_digits_read_without_sklearn_are_sklearns_digits():
    from sklearn.datasets import load_digits as sk_load_digits

    from genexp.data.digits import digits_arrays

    images, y = digits_arrays()
    raw = sk_load_digits()
    assert np.array_equal(images, raw.images) and np.array_equal(y, raw.target)
    assert images.dtype == raw.images.dtype and y.dtype == raw.target.dtype


def test_the_default_dataset_imports_no_sklearn():
    # scikit-learn (with scipy and pandas) costs over a second at every command's start.
    code = "import sys; from genexp.data.digits import load_digits; load_digits(); print('sklearn' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "False", p.stderr
