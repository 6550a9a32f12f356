"""The `genexp` command end to end, in a temp dir, with a few steps."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import FAST, genexp, one_line_refusal, results_under

from genexp import cli
from genexp.cli import COMMANDS

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

RESULT_KEYS = {"status", "dataset", "model", "method", "labels", "seed", "split_seed", "steps", "val_acc",
               "test_acc", "val_acc_final", "test_acc_final", "wall_time_s", "step_time_ms", "versions",
               "git_commit", "best_step", "n_labeled", "n_unlabeled", "cpu"}


def test_help_lists_subcommands_and_groups(tmp_path):
    top = genexp("--help", cwd=tmp_path)
    assert top.returncode == 0 and "install=bash" in top.stdout
    assert all(f"    {name} " in top.stdout for name in COMMANDS), top.stdout
    train_help = genexp("train", "--help", cwd=tmp_path)
    assert train_help.returncode == 0
    for group in ("dataset", "model", "method", "optim", "experiment"):
        assert f"{group}:" in train_help.stdout


@pytest.mark.parametrize("name", ["table", "plot", "bench", "inequality"])
def test_each_command_has_its_help(tmp_path, name):
    p = genexp(name, "--help", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith(f"usage: genexp {name} "), p.stdout + p.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_arguments_reach_the_command_untouched(monkeypatch, name):
    seen = []
    monkeypatch.setattr(cli, "command_main", lambda n: lambda argv: seen.append((n, argv)) or 7)
    args = ["-m", "method=none,vat", "--cfg", "job", "--help", "-h", "--", "x=1", "train"]
    assert cli.main([name, *args]) == 7 and seen == [(name, args)]


@pytest.mark.parametrize("argv,says", [(["nosuch"], "invalid choice: 'nosuch'"), (["-x"], "unrecognized arguments: -x"),
                                       (["-sc"], "expected one argument"), (["-sc", "query=bash", "nosuch"], "nosuch")])
def test_bad_command_line_is_one_line(tmp_path, argv, says):
    p = genexp(*argv, cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("error: ") and says in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_of_commands_and_train_overrides(tmp_path):
    # The README's install line, then what bash does on TAB: the script asks `genexp -sc query=bash`.
    script = '''eval "$(genexp -sc install=bash)"; complete -p genexp || exit 3
    if complete -p train >/dev/null 2>&1; then echo "also registered for a command called train"; exit 4; fi
    tab() { COMP_LINE="$1"; COMP_POINT=${#1}; local w=($1); COMP_CWORD=$((${#w[@]} - 1)); hydra_bash_completion
            echo "$1 -> ${COMPREPLY[*]}"; }
    tab "genexp ta"; tab "genexp train -m method=v"'''
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # genexp beside this Python
    p = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].endswith("-F hydra_bash_completion genexp"), lines  # registered for genexp, not `train`
    assert lines[1] == "genexp ta -> table"
    assert lines[2].startswith("genexp train -m method=v -> ") and "method=vat" in lines[2].split()
    assert "method=none" not in lines[2]


def test_train_writes_complete_records(tmp_path):
    run_dir = tmp_path / "run"
    p = genexp("train", "method=vat", "labels=30", "seed=3", *FAST, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert RESULT_KEYS <= result.keys()
    assert result["status"] == "completed" and result["method"] == "vat" and result["seed"] == 3
    assert result["n_labeled"] == 30 and 0 <= result["test_acc"] <= 1 and result["step_time_ms"] > 0
    assert result["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert result["cpu"].endswith(f", {torch.backends.cpu.get_cpu_capability()}") and len(result["cpu"]) > 8
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [10, 20]
    assert result["test_acc_final"] == lines[-1]["test_acc"]
    best = max(lines, key=lambda x: x["val_acc"])
    assert result["val_acc"] == best["val_acc"] and result["test_acc"] == best["test_acc"]
    split = json.loads((run_dir / "split.json").read_text())
    assert len(split["labeled"]) == 30 and not set(split["labeled"]) & set(split["unlabeled"])
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["loop"]["step"] == 20 and "model" in ckpt and "optimizer" in ckpt and "rng" in ckpt
    assert (run_dir / "config.yaml").exists() and (run_dir / ".hydra" / "overrides.yaml").exists()
    # A finished run ends with one summary line: test acc at best val, final, wall time, run dir.
    summary = [ln for ln in p.stdout.splitlines() if ln.startswith("done: ")]
    assert len(summary) == 1, p.stdout
    assert f"test acc {100 * result['test_acc']:.2f}% at best val" in summary[0]
    assert f"final {100 * result['test_acc_final']:.2f}%" in summary[0] and "wall 0:0" in summary[0]
    assert summary[0].endswith(f"run dir {run_dir}")


def test_same_split_seed_same_split_across_methods(tmp_path, in_process):
    for m in ("none", "vat"):
        assert in_process(f"method={m}", "steps=2", "eval_every=1", "progress=false", f"hydra.run.dir={tmp_path / m}") == 0
    a, b = (json.loads((tmp_path / m / "split.json").read_text()) for m in ("none", "vat"))
    assert a == b


def test_multirun_sweep_and_table(tmp_path):
    p = genexp("train", "-m", "method=none,vat", "seed=0,1", "labels=20", *FAST, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    results = results_under(tmp_path / "outputs" / "multirun")
    assert sorted((r["method"], r["seed"]) for r in results) == [("none", 0), ("none", 1), ("vat", 0), ("vat", 1)]
    assert all(r["status"] == "completed" for r in results)
    # The sweep ends with its dir, the counts and the table command to run.
    sweep_dir = next((tmp_path / "outputs" / "multirun").iterdir())
    last = p.stdout.strip().splitlines()[-1]
    assert last == f"sweep {sweep_dir}: 4 completed, 0 failed; table: genexp table {sweep_dir}", p.stdout
    t = genexp("table", "outputs", cwd=tmp_path)
    assert t.returncode == 0, t.stderr
    md = (tmp_path / "outputs" / "table.md").read_text()
    assert "| digits | mlp | vat | 20 |" in md and "| digits | mlp | none | 20 |" in md


def test_none_vs_vat_sweep_at_a_chosen_eps(tmp_path):
    # README's command for none vs VAT at one ε (`method=none,vat method.eps=0.3` fails: none has no eps).
    import yaml
    p = genexp("train", "-m", "experiment=none_vs_vat", "vat_eps=0.3", "seed=0", "labels=20", *FAST,
               f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    results = results_under(tmp_path / "sweep")
    assert sorted(r["method"] for r in results) == ["none", "vat"] and all(r["status"] == "completed" for r in results)
    configs = {c["method"]["name"]: c["method"] for c in
               (yaml.safe_load(f.read_text()) for f in (tmp_path / "sweep").glob("*/config.yaml"))}
    assert configs["vat"]["eps"] == 0.3 and "eps" not in configs["none"]


def test_configs_found_from_any_directory(tmp_path):
    sub = tmp_path / "some" / "where"
    sub.mkdir(parents=True)
    p = genexp("train", "--cfg", "job", cwd=sub)
    assert p.returncode == 0 and "_target_: genexp.methods.vat.VAT" in p.stdout


def test_bad_input_is_one_line(tmp_path):
    # Through a real `genexp` process: nothing but the one line reaches stderr (no warning, no
    # log line a fresh interpreter prints once). Every other bad input is checked in-process by
    # tests/train/test_reliability.py's test_bad_input_one_line_exit_2.
    p = genexp("train", *FAST, "labels=5", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    one_line_refusal(p, "labels")
    assert not (tmp_path / "r").exists()


def test_existing_run_dir_is_never_overwritten(tmp_path, in_process, capfd):
    run_dir = tmp_path / "run"
    assert in_process("steps=2", "eval_every=1", "progress=false", f"hydra.run.dir={run_dir}") == 0
    before = (run_dir / "result.json").read_bytes()
    capfd.readouterr()
    assert in_process("steps=3", "eval_every=1", "progress=false", f"hydra.run.dir={run_dir}") == 2
    assert "already holds a run" in capfd.readouterr().err
    assert (run_dir / "result.json").read_bytes() == before


def test_slurm_launcher_config_is_shipped(tmp_path):
    p = genexp("train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "SlurmLauncher" in p.stdout and "partition: gpu" in p.stdout and "gpus_per_node: 1" in p.stdout


def test_optuna_search_maximises_validation_accuracy(tmp_path):
    import yaml
    p = genexp("train", "-m", "experiment=vat_search", "hydra.sweeper.n_trials=3", *FAST,
               f"hydra.sweep.dir={tmp_path}/search", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    results = results_under(tmp_path / "search")
    assert len(results) == 3 and all(r["status"] == "completed" for r in results)
    best = yaml.safe_load((tmp_path / "search" / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(r["val_acc"] for r in results)
    assert set(best["best_params"]) == {"method.eps", "method.weight", "method.xi"}
