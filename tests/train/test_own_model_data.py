"""Your own nn.Module and your own data function (README, "Your own model and data"): the README's
example runs as written; a plain module trains with every input-space method; what it cannot do,
and what a data function returns wrong, is one line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import genexp, one_line_refusal

from genexp.data.user_function import function_dataset
from genexp.errors import GenexpError

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

README = Path(__file__).resolve().parents[2] / "README.md"
FAST = ["steps=6", "eval_every=3", "progress=false", "cpu_threads=1", "checkpoint_every=6"]


def readme_example() -> str:
    """The bash block of README's "Your own model and data"."""
    text = README.read_text()
    section = text[text.index("### Your own model and data"):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def run_readme(cwd: Path, genexp_function: str) -> subprocess.CompletedProcess:
    """The README block in bash, `genexp` being `genexp_function` (a shell function body)."""
    script = f"genexp() {{ {genexp_function}; }}\n{readme_example()}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYEXE": sys.executable}
    return subprocess.run(["bash", "-euc", script], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def example(tmp_path, monkeypatch) -> Path:
    """tmp_path holding the README's mine.py and myconf/ (its genexp line not run), importable."""
    p = run_readme(tmp_path, ":")
    assert p.returncode == 0, p.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("mine", "tokmod"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def refusal(in_process, capsys, *args: str, names: tuple[str, ...]) -> str:
    """A run of `genexp train` in this process refused in one line naming each of `names`."""
    capsys.readouterr()
    code = in_process(*args)
    out, err = capsys.readouterr()
    return one_line_refusal(subprocess.CompletedProcess([], code, out, err), *names)


def search(root: Path) -> str:
    return f"hydra.searchpath=[file://{root / 'myconf'}]"


def test_readme_example_runs_as_written(tmp_path):
    # Only the length and where it writes are added: the README's files and command are as printed.
    p = run_readme(tmp_path, f'"$PYEXE" -m genexp "$@" steps=50 eval_every=25 progress=false cpu_threads=1 '
                             f'hydra.run.dir={tmp_path / "run"}')
    assert p.returncode == 0, p.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert (result["status"], result["dataset"], result["model"], result["method"]) == \
        ("completed", "blobs", "twolayer", "vat")
    assert result["test_acc"] > 0.6  # 3 separable blobs: chance is 1/3


INPUT_METHODS = [
    ["method=none"], ["method=noise"], ["method=noise", "method.location=hidden"],
    ["method=noise", "method.location=weights"], ["method=noise_consistency"], ["method=gp_consistency"],
    ["method=gp_input"], ["method=gp_param"], ["method=fgm"], ["method=pgd"], ["method=vat"],
    ["method=vat", "method.warm_start=true"], ["method=vat_entmin"], ["method=pseudo_label"],
    ["method=mean_teacher"], ["method=fixmatch", "dataset=digits"], ["method=uda", "dataset=digits"],
    ["method=flexmatch", "dataset=digits"],
]


@pytest.mark.parametrize("method", INPUT_METHODS, ids=" ".join)
def test_plain_module_trains_with_every_input_method(example, in_process, method):
    run_dir = example / "run"
    data = [] if any(a.startswith("dataset=") for a in method) else ["dataset=blobs"]
    code = in_process(search(example), "model=twolayer", *data, *method, *FAST, f"hydra.run.dir={run_dir}")
    assert code in (0, None)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and 0 <= result["test_acc"] <= 1
    # best.pt holds the user's own module's weights under `module.`: its first Linear(features, 64).
    features = 64 if data == [] else 20
    assert torch.load(run_dir / "best.pt", weights_only=True)["model"]["module.net.1.weight"].shape == (64, features)


@pytest.mark.parametrize("method,says", [("vat_embedding_matrix", "text models only"), ("fixmatch", "view")])
def test_method_needing_more_than_inputs_refuses_in_one_line(example, in_process, capsys, method, says):
    refusal(in_process, capsys, search(example), "model=twolayer", "dataset=blobs", f"method={method}", *FAST,
            f"hydra.run.dir={example / 'run'}", names=(method, says))
    assert not (example / "run").exists()


TOKEN_MODULE = '''
from torch import nn

class Bag(nn.Module):  # reads token ids itself: no embed/head split
    def __init__(self, vocab_size, num_classes):
        super().__init__()
        self.emb, self.out = nn.Embedding(vocab_size, 8), nn.Linear(8, num_classes)

    def forward(self, x):
        return self.out(self.emb(x).mean(1))
'''


@pytest.fixture
def token_example(example) -> Path:
    (example / "tokmod.py").write_text(TOKEN_MODULE)
    (example / "myconf" / "model" / "bag.yaml").write_text(
        "_target_: tokmod.Bag\nname: bag\ntext_encoder:\n  _target_: genexp.data.text.vocab_encode\n"
        "  max_length: 8\n  min_freq: 1\n")
    rows = [{"text": f"{w} film {w} plot", "label": lab} for i in range(30)
            for w, lab in ((f"good{i % 3}", "pos"), (f"bad{i % 3}", "neg"))]
    (example / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return example


def test_plain_module_on_token_ids_trains_clean_and_refuses_perturbation(token_example, in_process, capsys):
    ex = token_example
    args = [search(ex), "model=bag", "dataset=text", f"dataset.path={ex / 'reviews.jsonl'}", "labels=20", *FAST]
    for method in ("none", "vat_embedding_matrix"):  # the latter perturbs the module's nn.Embedding matrix
        assert in_process(*args, f"method={method}", f"hydra.run.dir={ex / method}") in (0, None)
        assert json.loads((ex / method / "result.json").read_text())["status"] == "completed"
    refusal(in_process, capsys, *args, "method=vat", f"hydra.run.dir={ex / 'vat'}",
            names=("tokmod.Bag", "embed(x)", "head(h, mask)", "genexp.models.GenexpModel", "vat_embedding_matrix"))


MODULE_ARGS = '''
from torch import nn

class Linear(nn.Module):  # names neither input_shape nor num_classes
    def __init__(self, in_features, n_out=10):
        super().__init__()
        self.lin = nn.Linear(in_features, n_out)

    def forward(self, x):
        return self.lin(x.flatten(1))
'''


def test_constructor_gets_its_yaml_and_only_the_data_arguments_it_names(example, in_process, capsys):
    (example / "linmod.py").write_text(MODULE_ARGS)
    model = example / "myconf" / "model"
    (model / "lin.yaml").write_text("_target_: linmod.Linear\nname: lin\nin_features: 64\n")
    assert in_process(search(example), "model=lin", *FAST, f"hydra.run.dir={example / 'ok'}") in (0, None)
    assert json.loads((example / "ok" / "result.json").read_text())["status"] == "completed"

    (model / "lin_bare.yaml").write_text("_target_: linmod.Linear\nname: lin_bare\n")
    (model / "lin_extra.yaml").write_text("_target_: linmod.Linear\nname: lin_extra\nin_features: 64\nwidth: 3\n")
    for name, says in (("lin_bare", "needs 'in_features'"), ("lin_extra", "sets 'width'")):
        refusal(in_process, capsys, search(example), f"model={name}", *FAST, f"hydra.run.dir={example / name}",
                names=("linmod.Linear", says))
        assert not (example / name).exists()


DATA_FUNCTIONS = '''
import numpy as np
import torch

def as_dict(n=90):
    x = torch.randn(n, 2, 3)
    y = torch.arange(n) % 3
    y[:9] = -1
    return {"x_train": x, "y_train": y, "x_test": x[9:], "y_test": y[9:], "class_names": ["a", "b", "c"]}

def with_val_size(val_size):  # takes val_size itself: 200 · val_size rows
    n = round(200 * val_size)
    x = np.random.default_rng(0).normal(size=(n, 4))
    return x, np.arange(n) % 2, x, np.arange(n) % 2
'''


def test_data_function_returning_a_dict_of_tensors_trains(example, in_process):
    (example / "datamod.py").write_text(DATA_FUNCTIONS)
    (example / "myconf" / "dataset" / "d.yaml").write_text("_target_: datamod.as_dict\nname: d\nval_size: 0.2\n")
    assert in_process(search(example), "model=twolayer", "dataset=d", "labels=all", *FAST, f"hydra.run.dir={example / 'run'}") \
        in (0, None)
    split = json.loads((example / "run" / "split.json").read_text())
    # 81 labelled training rows, 0.2 of them held out for validation: val_size reached the split.
    assert len(split["val"]) == round(0.2 * 81)
    assert json.loads((example / "run" / "result.json").read_text())["status"] == "completed"


def test_data_function_that_declares_val_size_gets_it(example, monkeypatch):
    from helpers import train_cfg
    from omegaconf import open_dict

    from genexp.train.build import build_dataset

    (example / "datamod.py").write_text(DATA_FUNCTIONS)
    monkeypatch.delitem(sys.modules, "datamod", raising=False)
    cfg = train_cfg()
    with open_dict(cfg):
        cfg.dataset = {"_target_": "datamod.with_val_size", "name": "d", "val_size": 0.3}
    data = build_dataset(cfg)
    # The function got 0.3 (60 rows); genexp left the split's val_size at the Dataset's default.
    assert (data.num_classes, tuple(data.x_train.shape), data.val_size) == (2, (60, 4), 0.1)


def _good() -> dict:
    x = np.zeros((6, 2), dtype=np.float32)
    return {"x_train": x, "y_train": np.array([0, 1, 2, 0, 1, -1]), "x_test": x[:3], "y_test": np.array([0, 1, 2])}


def _with(**changes) -> dict:
    return {**_good(), **changes}


BAD_RETURNS = {
    "not a tuple": (lambda: np.zeros(3), "return (x_train, y_train, x_test, y_test)"),
    "three parts": (lambda: tuple(_good().values())[:3], "a tuple of 3"),
    "missing key": (lambda: {k: v for k, v in _good().items() if k != "y_test"}, "no 'y_test'"),
    "unknown key": (lambda: {**_good(), "x_val": 1}, "unknown key 'x_val'"),
    "nan": (lambda: _with(x_train=np.where(np.eye(6, 2) > 0, np.nan, 0)), "x_train holds NaN"),
    "1-d x": (lambda: _with(x_test=np.zeros(3)), "x_test has shape (3,)"),
    "row shape": (lambda: _with(x_test=np.zeros((3, 5))), "x_test rows have shape (5,)"),
    "lengths": (lambda: _with(y_train=np.array([0, 1, 2, 0])), "y_train has 4 labels but x_train has 6 rows"),
    "strings": (lambda: _with(y_train=np.array(list("abcabc"))), "y_train has dtype <U1"),
    "fractional": (lambda: _with(y_test=np.array([0, 1, 1.5])), "y_test holds 1.5"),
    "negative": (lambda: _with(y_train=np.array([0, 1, 2, 0, 1, -2])), "y_train holds the label -2"),
    "unlabelled test": (lambda: _with(y_test=np.array([0, 1, -1])), "every test row is labelled"),
    "gap": (lambda: _with(y_train=np.array([0, 2, 3, 0, 2, 3]), y_test=np.array([0, 2, 3])), "class 1"),
    "one class": (lambda: _with(y_train=np.zeros(6, int), y_test=np.zeros(3, int)), "at least 2"),
    "names": (lambda: _with(class_names=["a", "b"]), "class_names has 2 names for 3 classes"),
    "ragged": (lambda: _with(x_train=[[0.0], [1.0, 2.0]]), "x_train is not an array"),
}


@pytest.mark.parametrize("case", BAD_RETURNS)
def test_bad_return_is_one_line_naming_the_array(case):
    make, says = BAD_RETURNS[case]
    with pytest.raises(GenexpError) as e:
        function_dataset(make(), "dataset._target_=mypkg.load", "mine")
    assert says in str(e.value) and "\n" not in str(e.value)


def test_good_return_as_tuple_of_tensors():
    g = _good()
    data = function_dataset(tuple(torch.as_tensor(g[k]) for k in ("x_train", "y_train", "x_test", "y_test")),
                            "dataset._target_=mypkg.load", "mine")
    assert (data.num_classes, data.input_shape, data.x_train.dtype, data.y_train.tolist()) == \
        (3, (2,), torch.float32, [0, 1, 2, 0, 1, -1])


def test_bad_data_function_refused_through_the_cli_before_anything_is_written(example):
    (example / "badmod.py").write_text("import numpy as np\n\ndef load():\n    x = np.ones((8, 2))\n"
                                       "    x[3, 0] = np.inf\n    return x, np.arange(8) % 2, x, np.arange(8) % 2\n")
    (example / "myconf" / "dataset" / "bad.yaml").write_text("_target_: badmod.load\nname: bad\n")
    p = genexp("train", search(example), "dataset=bad", *FAST, f"hydra.run.dir={example / 'run'}", cwd=example,
               env={"PYTHONPATH": str(example)})
    one_line_refusal(p, "dataset._target_=badmod.load", "x_train holds NaN or infinite values (first in row 3)")
    assert not (example / "run").exists()
