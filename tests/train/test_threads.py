"""cpu_threads=auto: jobs side by side split the cores; a lone run gets them where its step is
large enough to gain (the rule measured in docs/RESULTS.md); the choice is recorded."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from genexp.train import threads
from genexp.train.threads import MIN_FLOPS_FOR_THREADS, choose_threads, launcher_parallelism

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

CPU = torch.device("cpu")
BIG, SMALL = 10 * MIN_FLOPS_FOR_THREADS, MIN_FLOPS_FOR_THREADS / 10


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.delenv(threads.PARALLEL_ENV, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    return monkeypatch


def test_a_lone_run_with_a_large_step_gets_every_core(four_cores):
    assert choose_threads("auto", CPU, BIG).threads == 4


def test_a_lone_run_with_a_small_step_gets_one_thread(four_cores):
    choice = choose_threads("auto", CPU, SMALL)
    assert choice.threads == 1 and "small step" in choice.reason


@pytest.mark.parametrize("jobs, expected", [("2", 2), ("4", 1), ("8", 1), ("3", 1)])
def test_jobs_side_by_side_split_the_cores(four_cores, jobs, expected):
    four_cores.setenv(threads.PARALLEL_ENV, jobs)
    choice = choose_threads("auto", CPU, BIG)
    assert choice.threads == expected and f"/ {jobs} jobs" in choice.reason


def test_torchrun_ranks_split_the_cores_too(four_cores):
    four_cores.setenv("LOCAL_WORLD_SIZE", "2")
    assert choose_threads("auto", CPU, BIG).threads == 2


def test_an_explicit_count_is_kept(four_cores):
    four_cores.setenv(threads.PARALLEL_ENV, "4")
    assert choose_threads(3, CPU, SMALL).threads == 3


@pytest.mark.parametrize("launcher, expected", [
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 4),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -2}, 3),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, 2),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
      "array_parallelism": 3}, 3),
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 1),
    (None, 1),
])
def test_launcher_parallelism(launcher, expected):
    assert launcher_parallelism(None if launcher is None else OmegaConf.create(launcher), cores=4) == expected


def test_the_default_launchers_jobs_count(tmp_path):
    """The joblib launcher's packaged default (n_jobs: -1) runs as many jobs as cores."""
    from helpers import train_cfg

    cfg = train_cfg("hydra/launcher=joblib", hydra_config=True)
    assert launcher_parallelism(cfg.hydra.launcher, cores=4) == 4


def test_a_joblib_sweep_records_one_thread_per_job(tmp_path):
    """Two jobs side by side on this machine's cores: each records its share and why."""
    from helpers import genexp, results_under

    cores = threads.usable_cores()
    p = genexp("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", "steps=4",
               "eval_every=2", "progress=false", "model.widths=[600,600]", "batch_size=256",
               "unlabeled_batch_size=256", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    results = results_under(tmp_path / "sweep")
    assert len(results) == 2
    for r in results:
        assert r["threads"] == max(1, cores // 2), json.dumps(r)[:400]
        assert "2 jobs side by side" in r["threads_reason"]
