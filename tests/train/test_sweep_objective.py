"""Any sweeper maximises what `genexp train` returns (validation accuracy), whatever its own default."""
import json

import pytest
import yaml
from helpers import genexp
from omegaconf import OmegaConf

from genexp.command.sweep_objective import maximise_objective

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)


def test_optuna_without_a_preset_picks_the_best_validation_trial(tmp_path):
    sweep = tmp_path / "s"
    r = genexp("train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=0",
               "method.eps=interval(0.1,10)", "steps=60", "eval_every=30", "model.widths=[16]", "progress=false",
               f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "hydra.sweeper.direction set to maximize" in r.stderr
    vals = [json.loads(p.read_text())["val_acc"] for p in sweep.glob("*/result.json")]
    assert len(vals) == 4 and len(set(vals)) > 1  # otherwise the test could not tell max from min
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"]
    assert best == max(vals)


def test_an_explicit_minimise_is_refused(tmp_path):
    sweep = tmp_path / "s"
    r = genexp("train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=minimize", "steps=20",
               f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 2 and "hydra.sweeper.direction=maximize" in r.stderr and "Traceback" not in r.stderr
    assert not sweep.exists()


def test_other_sweepers_defaults_are_turned_round():
    cfg = OmegaConf.create({"hydra": {"sweeper": {"optim": {"maximize": False}}, "overrides": {"hydra": []}}})
    assert maximise_objective(cfg) and cfg.hydra.sweeper.optim.maximize is True
    cfg = OmegaConf.create({"hydra": {"sweeper": {"ax_config": {"experiment": {"minimize": True}}},
                                      "overrides": {"hydra": []}}})
    assert maximise_objective(cfg) and cfg.hydra.sweeper.ax_config.experiment.minimize is False
    basic = OmegaConf.create({"hydra": {"sweeper": {"max_batch_size": None}, "overrides": {"hydra": []}}})
    assert maximise_objective(basic) is None
