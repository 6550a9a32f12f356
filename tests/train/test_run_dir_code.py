"""Issue 34, items 1 and 2: a run dir is data, so resuming one runs none of its code: not through a
genexp loader's keyword arguments (from_pretrained's trust_remote_code, weights_only) and not
through CIFAR-10's batch files (pickles). Each crafted run dir would create `pwned` if it ran."""
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from helpers import TINY, edit_config, finished_run, genexp, one_line_refusal, snapshot

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("done"))


def crafted_copy(done_run: Path, tmp_path: Path) -> Path:
    """A copy of a finished run as SIGKILL before its first checkpoint leaves it: resume=true runs
    it again from step 0 with its recorded config (no checkpoint whose config hash could differ)."""
    run = tmp_path / "copy"
    shutil.copytree(done_run, run)
    record = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**record, "status": "running"}))
    for name in ("checkpoint.pt", "best.pt"):
        (run / name).unlink(missing_ok=True)
    return run


class Payload:
    """Unpickling it creates the directory `marker`: the code a crafted file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


# 1 -------------------------------------------------------------------------------------------

def model_folder(tmp_path: Path, marker: Path, model_type: str = "bert") -> Path:
    """A local model folder that brings its own Python (auto_map), and weights that are a pickle:
    importing `custom.py` or unpickling `pytorch_model.bin` creates `marker`. With a model_type
    transformers does not know, only the folder's own code could build it."""
    import torch

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "custom.py").write_text(f"import pathlib\n\npathlib.Path({str(marker)!r}).mkdir()\n")
    classes = {"AutoConfig": "custom.Config", "AutoModel": "custom.Model",
               "AutoModelForSequenceClassification": "custom.Model", "AutoTokenizer": ["custom.Tokenizer", None]}
    config = {"model_type": model_type, "auto_map": classes, "hidden_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 1, "intermediate_size": 8, "vocab_size": 10, "max_position_embeddings": 16}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"auto_map": classes}))
    torch.save({"w": Payload(marker)}, folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("where,kind,extra", [
    ("dataset", "model", {"trust_remote_code": True}),
    ("method.eps", "tokenizer", {"trust_remote_code": True}),  # nested in a genexp method
    ("dataset", "encoder", {"weights_only": False}),            # torch's full unpickler for the weights
    ("dataset", "model", {"code_revision": "main", "trust_remote_code": True}),
])
def test_pretrained_loader_in_a_run_dir_runs_no_code(done_run, tmp_path, where, kind, extra):
    marker = tmp_path / "pwned"
    run = crafted_copy(done_run, tmp_path)
    node = {"_target_": "genexp.data.pretrained.load_pretrained", "kind": kind,
            "name_or_path": str(model_folder(tmp_path, marker)), **extra}
    if where == "dataset":
        node["name"] = "text"  # the group's display name, read before anything is built
    edit_config(run, where, node)
    before = snapshot(run)
    p = genexp("train", "resume=true", f"hydra.run.dir={run}", cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    assert not marker.exists()
    one_line_refusal(p, "load_pretrained", next(iter(extra)))
    assert snapshot(run) == before


@pytest.mark.parametrize("kind", ["model", "tokenizer", "encoder"])
def test_pretrained_loader_never_runs_a_folders_own_code(tmp_path, kind):
    from genexp.data.pretrained import load_pretrained
    from genexp.errors import GenexpError

    marker = tmp_path / "pwned"
    folder = model_folder(tmp_path, marker, model_type="custom-arch")
    with pytest.raises(GenexpError, match="needs its own Python code.*never runs"):
        load_pretrained(kind, str(folder))
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, '
                                        '"num_attention_heads": 1, "intermediate_size": 8, "vocab_size": 10}')
    if kind != "tokenizer":  # no auto_map left: the pickled weights are refused by torch's weights_only load
        with pytest.raises(GenexpError, match="weights file holds more than tensors"):
            load_pretrained(kind, str(folder))
    assert not marker.exists()


# 2 -------------------------------------------------------------------------------------------

def crafted_cifar(tmp_path: Path, marker: Path) -> Path:
    """A cifar-10-batches-py folder whose every file runs code when pickle.load reads it."""
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({"data": Payload(marker), "labels": [0], "label_names": ["a"]},
                                                 protocol=2))
    return folder.parent


def test_cifar_root_in_a_run_dir_runs_no_code(done_run, tmp_path):
    marker = tmp_path / "pwned"
    run = crafted_copy(done_run, tmp_path)
    edit_config(run, "dataset", {"_target_": "genexp.data.cifar10.load_cifar10", "name": "cifar10",
                                 "root": str(crafted_cifar(tmp_path, marker)), "verify_md5": False})
    before = snapshot(run)
    p = genexp("train", "resume=true", f"hydra.run.dir={run}", cwd=tmp_path)
    assert not marker.exists()
    one_line_refusal(p, "refusing to load", "mkdir")
    assert snapshot(run) == before
    # A fresh run pointed at the same files: the same reader, the same refusal.
    p = genexp("train", "dataset=cifar10", f"dataset.root={tmp_path / 'cifar'}", "dataset.verify_md5=false",
               "model=mlp", *TINY, cwd=tmp_path)
    assert not marker.exists()
    one_line_refusal(p, "refusing to load")


def test_every_shipped_config_passes_the_keyword_check():
    """Resume checks a run dir's keys against what its targets declare: every config genexp ships
    (each group option, each experiment) must pass, or its own run dirs would not resume."""
    from helpers import train_cfg

    from genexp.train.build import check_targets

    configs = Path(__file__).resolve().parents[2] / "genexp" / "configs"
    overrides = [f"{group}={p.stem}" for group in ("dataset", "model", "method", "optim", "experiment")
                 for p in sorted((configs / group).glob("*.yaml"))]
    for override in [*overrides, "model=hf_encoder model.freeze=true dataset=tweets"]:
        check_targets(train_cfg(*override.split()), override)


def test_a_kwargs_catch_all_admits_no_undeclared_key():
    from genexp.train.build import keyword_refusal

    def loader(root: str, *, download: bool = False, **kwargs):
        return None

    assert keyword_refusal(loader, {"_target_": "x", "root": "r", "download": True}, "dataset") is None
    assert "'trust_remote_code'" in keyword_refusal(loader, {"_target_": "x", "trust_remote_code": True}, "dataset")
    assert "_args_" in keyword_refusal(loader, {"_target_": "x", "_args_": ["r", "extra"]}, "dataset")
    assert keyword_refusal(loader, {"_target_": "x", "name": "mine"}, "dataset") is None  # the build strips it
    assert "'name'" in keyword_refusal(loader, {"_target_": "x", "name": "mine"}, "method.eps")
