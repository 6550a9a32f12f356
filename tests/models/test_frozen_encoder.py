"""model=hf_encoder model.freeze=true: texts encoded once by a frozen encoder, pooled, cached on
disk under a key that changes with the model, tokenizer settings, pooling and texts; a head trains
on the vectors. A tiny BERT built here (hidden 16, 2 layers) stands in for MiniLM."""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from helpers import train_cfg

from genexp.data.dataset import Dataset
from genexp.data.features import hf_features, pool

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

WORDS = "a an the film movie good bad great awful fine boring fun love hate plot actor long short very not".split()
TEXTS = ["a good film", "the movie was awful", "great fun", "boring plot , very long", "i love the actor",
         "not fine at all", "a very very good movie with a great plot and a fine actor", "hate"]
TEST_TEXTS = ["good fun", "awful boring film"]


def _save_tiny_bert(folder: Path, seed: int) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return _save_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny", seed=0)


def _data(texts=TEXTS, test=TEST_TEXTS) -> Dataset:
    y = torch.arange(len(texts)) % 2
    return Dataset(name="text", x_train=list(texts), y_train=y, x_test=list(test),
                   y_test=torch.arange(len(test)) % 2, num_classes=2)


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.safetensors"))


def _features(bert: Path, cache: Path, **kw) -> Dataset:
    kw = {"max_length": 16, "batch_size": 3, "progress": False, "device": "cpu", **kw}
    return hf_features(_data(kw.pop("texts", TEXTS)), str(bert), cache_dir=str(cache), **kw)


def test_features_are_pooled_encoder_outputs_then_cached(bert, tmp_path, monkeypatch, caplog):
    from transformers import AutoTokenizer, BertModel

    caplog.set_level("INFO")
    data = _features(bert, tmp_path)
    assert data.x_train.shape == (len(TEXTS), 16) and data.x_test.shape == (len(TEST_TEXTS), 16)
    assert data.mask_train is None and not data.is_text and not data.x_train.requires_grad
    # Row i is text i (batches ran sorted by length) pooled over its real tokens only.
    tok, enc = AutoTokenizer.from_pretrained(bert), BertModel.from_pretrained(bert).eval()
    with torch.no_grad():
        for i in (0, 6):
            b = tok([TEXTS[i]], return_tensors="pt")
            h = enc(**b).last_hidden_state[0]
            assert torch.allclose(data.x_train[i], torch.nn.functional.normalize(h.mean(0), dim=0), atol=1e-5)
    assert torch.allclose(data.x_train.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)
    assert [r.message for r in caplog.records if "cache entry" in r.message][0].startswith("features: building")
    (entry,) = _entries(tmp_path)

    # A hit never loads (let alone runs) the encoder or its tokenizer.
    def no_load(*a, **k):
        raise AssertionError("the encoder was loaded on a cache hit")

    monkeypatch.setattr("genexp.data.pretrained.load_pretrained", no_load)
    caplog.clear()
    again = _features(bert, tmp_path)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.x_test, data.x_test)
    assert [r.message for r in caplog.records if "cache entry" in r.message] == [
        f"features: reusing cache entry {entry}"]
    # A damaged entry is rebuilt, not read.
    monkeypatch.undo()
    entry.write_bytes(entry.read_bytes()[:100])
    assert torch.equal(_features(bert, tmp_path).x_train, data.x_train)


def test_pool_mean_ignores_padding():
    h = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(pool(h, mask, "mean", normalize=False), torch.tensor([[2.0, 0.0]]))
    assert torch.equal(pool(h, mask, "mean", normalize=True), torch.tensor([[1.0, 0.0]]))
    assert torch.equal(pool(h, mask, "cls", normalize=False), torch.tensor([[1.0, 0.0]]))


def test_changed_settings_model_or_texts_make_new_entries(bert, tmp_path):
    cache = tmp_path / "cache"
    base = _features(bert, cache).x_train
    assert len(_entries(cache)) == 1
    short = _features(bert, cache, max_length=4).x_train  # truncation changes the long texts
    assert len(_entries(cache)) == 2 and not torch.equal(short, base)
    _features(bert, cache, normalize=False)
    _features(bert, cache, pooling="cls")
    _features(bert, cache, texts=[*TEXTS[:-1], "hate it"])
    assert len(_entries(cache)) == 5
    other = _save_tiny_bert(tmp_path / "other", seed=1)
    assert not torch.equal(_features(other, cache).x_train, base) and len(_entries(cache)) == 6
    # Same path, new weights (a retrained model saved over the old one): never the stale entry.
    copy = tmp_path / "copy"
    shutil.copytree(bert, copy)
    first = _features(copy, cache).x_train
    assert torch.equal(first, base) and len(_entries(cache)) == 7
    shutil.copy(other / "model.safetensors", copy / "model.safetensors")
    assert not torch.equal(_features(copy, cache).x_train, first) and len(_entries(cache)) == 8
    assert not list(cache.glob(".*.tmp"))


def _build_in_child(bert: str, cache: str, log: str, barrier) -> None:
    import time

    import genexp.data.features as features

    real = features.encode_texts

    def slow_logged(*a, **k):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)  # keep the first builder inside its lock while the other arrives
        return real(*a, **k)

    features.encode_texts = slow_logged
    barrier.wait()
    x = _features(Path(bert), Path(cache)).x_train
    torch.save(x, f"{cache}/out-{os.getpid()}.pt")


def test_parallel_builders_encode_once_and_leave_one_valid_entry(bert, tmp_path):
    # spawn, not fork: a fork after torch has started its thread pools (an earlier test that
    # trained in this process) can leave the children deadlocked.
    ctx = multiprocessing.get_context("spawn")
    log, barrier = tmp_path / "encoded.log", ctx.Barrier(2)
    procs = [ctx.Process(target=_build_in_child, args=(str(bert), str(tmp_path), str(log), barrier))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    # encode_texts runs once per split (train, test), in one process only.
    assert len(set(log.read_text().split())) == 1 and len(log.read_text().split()) == 2
    outs = [torch.load(p, weights_only=True) for p in sorted(tmp_path.glob("out-*.pt"))]
    assert len(outs) == 2 and torch.equal(outs[0], outs[1])
    assert len(_entries(tmp_path)) == 1 and not list(tmp_path.glob(".*.tmp"))
    assert torch.equal(_features(bert, tmp_path).x_train, outs[0])


def test_frozen_head_trains_without_touching_the_encoder(bert, tmp_path, monkeypatch):
    import genexp.data.pretrained as hf
    from genexp.models.hf_encoder import HFEncoder
    from genexp.regularizers import vat_loss
    from genexp.train.build import build_dataset, build_model

    loaded = []
    real = hf.load_pretrained

    def keep(kind, *a, **k):
        obj = real(kind, *a, **k)
        loaded.append(obj)
        return obj

    monkeypatch.setattr(hf, "load_pretrained", keep)
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS * 3)))
    cfg = train_cfg("dataset=text", f"dataset.path={path}", "model=hf_encoder", f"model.name_or_path={bert}",
                    "model.freeze=true", f"model.cache_dir={tmp_path / 'cache'}", "model.head_widths=[8]",
                    "model.text_encoder.max_length=16", "progress=false", "device=cpu")
    data = build_dataset(cfg)
    (encoder,) = [m for m in loaded if isinstance(m, torch.nn.Module)]
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = build_model(cfg, data)
    x = data.x_train[:6]
    assert model.embed(x) is x  # identity: perturbations act on the pooled feature
    assert sum(p.numel() for p in model.parameters()) == 16 * 8 + 8 + 8 * 2 + 2
    assert not {id(p) for p in model.parameters()} & {id(p) for p in encoder.parameters()}
    loss = torch.nn.functional.cross_entropy(model(x), data.y_train[:6]) + vat_loss(model, x, xi="auto", eps=1.0)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in encoder.parameters())
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())
    # The fine-tuning mode still builds the whole encoder as the model (frozen keys stay out of it).
    tuned = build_model(train_cfg("model=hf_encoder", f"model.name_or_path={bert}"), _data_ids())
    assert isinstance(tuned, HFEncoder) and any(p.requires_grad for p in tuned.model.parameters())


def _data_ids() -> Dataset:
    ids = torch.ones(2, 5, dtype=torch.long)
    return Dataset(name="text", x_train=ids, y_train=torch.tensor([0, 1]), x_test=ids, y_test=torch.tensor([0, 1]),
                   num_classes=2, mask_train=torch.ones_like(ids), mask_test=torch.ones_like(ids))


def test_genexp_train_frozen_end_to_end(bert, tmp_path, monkeypatch):
    """`genexp train -m` through the CLI entry point, in this process (a fresh interpreter would
    spend most of the test importing torch): the first run builds the entry, the second reuses it."""
    from hydra.core.global_hydra import GlobalHydra

    from genexp.cli import main
    from genexp.command import app as train_app

    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": ["neg", "pos"][i % 2]}) + "\n"
                            for i, t in enumerate(TEXTS * 4)))
    cache = tmp_path / "cache"
    monkeypatch.setenv("GENEXP_CACHE", str(cache))  # the default model.cache_dir reads it
    for var in ("HYDRA_FULL_ERROR", train_app.TRACEBACK_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    try:
        code = main(["train", "-m", "method=none,vat", "dataset=text", f"dataset.path={path}", "model=hf_encoder",
                     f"model.name_or_path={bert}", "model.freeze=true", "model.head_widths=[8]", "labels=6",
                     "steps=10", "eval_every=5", "batch_size=4", "unlabeled_batch_size=4", "progress=false",
                     "cpu_threads=1", "checkpoint_every=10", f"hydra.sweep.dir={sweep}"])
    except SystemExit as e:
        code = e.code
    finally:
        GlobalHydra.instance().clear()
    assert code in (0, None)
    (entry,) = _entries(cache / "features")
    logs = [p.read_text() for p in sorted(sweep.glob("*/genexp.log"))]
    assert len(logs) == 2
    assert f"features: building cache entry {entry}" in logs[0] and "reusing" not in logs[0]
    assert f"features: reusing cache entry {entry}" in logs[1] and "building" not in logs[1]
    results = [json.loads(r.read_text()) for r in sorted(sweep.rglob("result.json"))]
    assert [(r["status"], r["method"], r["model"]) for r in results] == [
        ("completed", "none", "hf_encoder"), ("completed", "vat", "hf_encoder")]
    assert results[0]["n_params"] == 16 * 8 + 8 + 8 * 2 + 2


def test_standardize_is_fitted_on_training_features_only():
    from genexp.models.frozen import standardize

    g = torch.Generator().manual_seed(0)
    train = torch.randn(50, 6, generator=g) * torch.tensor([1.0, 2.0, 0.1, 5.0, 1.0, 1.0]) + 3.0
    train[:, 4] = 0.25  # a dimension constant on the training set (MiniLM has one)
    test = torch.randn(7, 6, generator=g)
    z_train, z_test = standardize(train, test)
    assert torch.allclose(z_train.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.all(z_train[:, 4] == 0) and torch.isfinite(z_test).all()
    # per-dimension std 1/sqrt(D): the mean squared norm of a feature is 1 (method.eps keeps its unit-norm scale)
    assert torch.allclose(z_train.std(0)[[0, 1, 2, 3, 5]], torch.full((5,), 6 ** -0.5), atol=1e-5)
    assert abs(float(z_train.pow(2).sum(1).mean()) - 5 / 6 * 49 / 50) < 1e-4
    # the test split is mapped with the training statistics and never enters them
    assert torch.equal(standardize(train, test * 100)[0], z_train)
    _, one = standardize(train, train[:3])
    assert torch.allclose(one, z_train[:3])


def test_standardize_key_applies_after_the_cache(bert, tmp_path):
    from genexp.train.build import build_dataset

    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS * 3)))
    common = ["dataset=text", f"dataset.path={path}", "model=hf_encoder", f"model.name_or_path={bert}",
              "model.freeze=true", f"model.cache_dir={tmp_path / 'cache'}", "model.text_encoder.max_length=16",
              "progress=false", "device=cpu"]
    raw = build_dataset(train_cfg(*common))
    std = build_dataset(train_cfg(*common, "model.standardize=true"))
    assert len(_entries(tmp_path / "cache")) == 1  # one cached encoding serves both (the key holds the encoder's output)
    assert torch.allclose(std.x_train.mean(0), torch.zeros(16), atol=1e-5)
    assert torch.allclose(std.x_train.pow(2).sum(1).mean(), torch.tensor(1.0 * (len(raw.x_train) - 1) / len(raw.x_train)),
                          atol=1e-4)
    mean, sd = raw.x_train.mean(0), raw.x_train.std(0) * 4.0  # sqrt(16)
    assert torch.allclose(std.x_test, (raw.x_test - mean) / sd, atol=1e-5)


def test_freeze_is_refused_for_a_model_that_has_no_frozen_mode():
    from genexp.errors import GenexpError
    from genexp.train.build import build_model

    with pytest.raises(GenexpError, match="model.freeze=true works with model=hf_encoder only"):
        build_model(train_cfg("model=lstm", "model.freeze=true"), _data_ids())
