"""A search (Optuna) prints validation accuracy alone, and its last line reruns the best setting over
seeds; a sweep preset run without -m says it ran one job."""
import json
import re
import shlex

import pytest
import yaml
from helpers import TINY, genexp, results_under

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)


def test_a_search_shows_no_test_accuracy_and_ends_with_the_rerun_over_seeds(tmp_path):
    sweep = tmp_path / "search"
    p = genexp("train", "-m", "experiment=vat_search", "hydra.sweeper.n_trials=2", *TINY, "labels=30",
               f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    printed = p.stdout + p.stderr
    shown = [ln for ln in printed.splitlines() if re.search(r"test[ _]acc", ln, re.IGNORECASE)]
    assert not shown, shown
    assert printed.count("val_acc ") == 4 and p.stdout.count("done: val acc ") == 2  # 2 evaluations x 2 trials
    assert "setup plugin alembic" not in printed  # ~30 INFO lines of the storage's migration tool before the first trial
    results = results_under(sweep)
    assert len(results) == 2 and all(0 <= r["test_acc"] <= 1 for r in results)  # still recorded

    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    last = p.stdout.splitlines()[-1]
    assert f"(val acc {100 * best['best_value']:.2f}%)" in last
    command = shlex.split(last.split("for the numbers to report: ", 1)[1])
    assert command[:3] == ["genexp", "train", "-m"] and command[-1] == "seed=0,1,2,3,4"
    assert {f"{k}={v}" for k, v in best["best_params"].items()} <= set(command)
    assert {"experiment=vat_search", "labels=30", "hydra/sweeper=basic", *TINY} <= set(command)
    assert not [a for a in command if a.startswith(("hydra.sweeper.", "hydra.sweep.dir"))]

    # The command runs (one seed here): the best trial's setting, swept by Hydra's basic sweeper.
    rerun = tmp_path / "rerun"
    r = genexp(*command[1:-1], "seed=0", f"hydra.sweep.dir={rerun}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "done: test acc" in r.stdout and "best setting" not in r.stdout  # a grid: test shown, no rerun line
    config = yaml.safe_load(next(rerun.glob("*/config.yaml")).read_text())
    assert config["method"]["eps"] == best["best_params"]["method.eps"] and config["seed"] == 0
    hydra_cfg = yaml.safe_load(next(rerun.glob("*/.hydra/hydra.yaml")).read_text())["hydra"]
    assert hydra_cfg["sweeper"]["_target_"].endswith("BasicSweeper")


def test_the_rerun_command_drops_the_search_and_keeps_the_rest():
    from genexp.command.search import rerun_command

    args = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "method.eps=interval(0.1,10)",
            "method.xi=1e-6", "seed=3", "resume=true", "hydra.sweep.dir=/x y", "hydra/launcher=joblib", "labels=20",
            "hydra.output_subdir=null"]
    got = shlex.split(rerun_command(args, {"method.eps": 0.5, "method.xi": "auto"}))
    assert got == ["genexp", "train", "-m", "hydra/launcher=joblib", "labels=20", "hydra/sweeper=basic",
                   "method.eps=0.5", "method.xi=auto", "seed=0,1,2,3,4"]


def test_a_sweep_preset_without_m_warns_once_and_runs_one_job(tmp_path):
    p = genexp("train", "experiment=digits_labels", *TINY, f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "runs one job" in warnings[0], p.stderr
    command = shlex.split(warnings[0].split("the sweep: ", 1)[1])
    assert command == ["genexp", "train", "-m", "experiment=digits_labels", *TINY]
    assert [json.loads(f.read_text())["status"] for f in tmp_path.rglob("result.json")] == ["completed"]

