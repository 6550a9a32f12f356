"""Run dirs: what a run dir may instantiate, one job per dir, stranded runs, dirs of the other
kind, Hydra options that hid genexp's messages, and the smaller checks of issue 26 (item 12)."""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    TINY,
    edit_config,
    finished_run,
    genexp,
    one_line_refusal,
    one_line_refusal_here,
    results_under,
    snapshot,
    train_cfg,
)
from omegaconf import OmegaConf

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

COMPARED = ("val_acc", "test_acc", "best_step", "val_acc_final", "test_acc_final", "train_acc_final")


def set_status(run: Path, status: str) -> None:
    record = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**record, "status": status}))


def strand(run: Path) -> None:
    """What SIGKILL before the first checkpoint leaves: status running, no checkpoint."""
    set_status(run, "running")
    for name in ("checkpoint.pt", "best.pt"):
        (run / name).unlink(missing_ok=True)


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in lines]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("done"))


@pytest.fixture(scope="module")
def done_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    p = genexp("train", "-m", "seed=0,1", *TINY, f"hydra.sweep.dir={root / 'sw'}", cwd=root)
    assert p.returncode == 0, p.stderr
    return root / "sw"


# 1 -------------------------------------------------------------------------------------------

def payload(tmp_path: Path) -> tuple[Path, Path]:
    """A pickle whose loading creates `marker`: the code a crafted run dir would run."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    (tmp_path / "payload.pkl").write_bytes(pickle.dumps(Payload()))
    return tmp_path / "payload.pkl", marker


@pytest.mark.parametrize("key,shape", [
    ("method", "torch.load"),
    ("method", "nested"),              # a genexp method whose argument is the call
    ("optim.optimizer", "disguised"),  # a name that starts like genexp's but is torch.load
])
def test_crafted_run_dir_does_not_run_code_on_resume(done_run, tmp_path, key, shape):
    run = tmp_path / "copy"
    shutil.copytree(done_run, run)
    pkl, marker = payload(tmp_path)
    call = {"_target_": "torch.load", "_args_": [str(pkl)], "weights_only": False}
    if shape == "nested":
        call = {"_target_": "genexp.methods.vat.VAT", "eps": {"_args_": [call]}}
    elif shape == "disguised":
        call = {**call, "_target_": "genexp.models.mlp.torch.load"}
    edit_config(run, key, call)
    set_status(run, "running")  # the repro: its checkpoint is still there
    before = snapshot(run)
    p = genexp("train", "resume=true", f"hydra.run.dir={run}", cwd=tmp_path)
    line = one_line_refusal(p, "torch.load", "_target_")
    assert "allow_targets" not in line  # never advise trusting a library's own callables
    assert not marker.exists()
    assert snapshot(run) == before


def test_own_plugin_resumes_when_allowed_by_name(done_run, tmp_path):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("from genexp.methods.vat import VAT\n\n\nclass Mine(VAT):\n"
                                                   "    pass\n")
    run = tmp_path / "copy"
    shutil.copytree(done_run, run)
    edit_config(run, "method._target_", "mypkg.Mine")
    strand(run)
    before = snapshot(run)
    env = {"PYTHONPATH": str(tmp_path)}
    refused = genexp("train", f"resume={run}", cwd=tmp_path, env=env)
    assert "allow_targets=[mypkg]" in one_line_refusal(refused, "mypkg.Mine")
    assert snapshot(run) == before
    p = genexp("train", f"resume={run}", "allow_targets=[mypkg]", "progress=false", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads((run / "result.json").read_text())["status"] == "completed"
    assert "allow_targets" not in (run / "config.yaml").read_text()  # trust is the command's, not the record's


# 2 -------------------------------------------------------------------------------------------

def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "genexp", "train", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_two_runs_started_together_into_one_dir(tmp_path):
    run = tmp_path / "run"
    long = [*TINY, "steps=400", "eval_every=100", "checkpoint_every=100"]
    procs = [start([*long, f"seed={s}", f"hydra.run.dir={run}"], tmp_path) for s in (1, 2)]
    outs = [(p, *p.communicate(timeout=120)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in outs)
    assert codes == [0, 2], [err for _, _, err in outs]
    winner = next(i for i, (p, _, _) in enumerate(outs) if p.returncode == 0)
    loser_err = outs[1 - winner][2]
    assert len(loser_err.strip().splitlines()) == 1 and "Traceback" not in loser_err, loser_err
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "completed" and record["seed"] == winner + 1
    assert OmegaConf.load(run / "config.yaml").seed == winner + 1
    assert [x["step"] for x in metrics(run) if "test_acc" in x] == [100, 200, 300, 400]
    assert not (run / ".genexp.lock").exists()


def test_two_default_dir_runs_started_together_both_succeed(tmp_path):
    procs = [start([*TINY, "steps=200", "eval_every=100"], tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    dirs = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(dirs) == 2
    for d in dirs:
        assert [x["step"] for x in metrics(d) if "test_acc" in x] == [100, 200]


# 5 -------------------------------------------------------------------------------------------

def test_run_killed_before_its_first_checkpoint_restarts_from_step_0(tmp_path):
    args = [*TINY, "steps=600", "eval_every=200", "checkpoint_every=600"]
    reference = start([*args, f"hydra.run.dir={tmp_path / 'ref'}"], tmp_path)
    killed = tmp_path / "killed"
    p = start([*args, f"hydra.run.dir={killed}"], tmp_path)
    deadline = time.time() + 60
    while not (killed / "result.json").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be killed; make it longer"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert reference.wait(timeout=120) == 0
    assert json.loads((killed / "result.json").read_text())["status"] == "running"
    assert not (killed / "checkpoint.pt").exists()
    r = genexp("train", f"resume={killed}", "progress=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "restarting it from step 0" in r.stdout
    a, b = (json.loads((d / "result.json").read_text()) for d in (tmp_path / "ref", killed))
    assert b["status"] == "completed" and {k: a[k] for k in COMPARED} == {k: b[k] for k in COMPARED}
    assert [x["step"] for x in metrics(killed) if "test_acc" in x] == [200, 400, 600]


def test_sweep_with_a_stranded_run_completes_with_resume(done_sweep, tmp_path):
    sweep = tmp_path / "sw"
    shutil.copytree(done_sweep, sweep)
    stranded = sorted(p.parent for p in sweep.rglob("result.json"))[1]
    strand(stranded)
    (stranded / "metrics.jsonl").write_text((stranded / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    p = genexp("train", "-m", "seed=0,1", *TINY, "resume=true", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert sorted(r["status"] for r in results_under(sweep)) == ["completed", "completed"]
    assert ": 2 completed, 0 failed;" in p.stdout
    assert metrics(stranded) == metrics(done_sweep / stranded.relative_to(sweep))


# 7 -------------------------------------------------------------------------------------------

def test_a_sweep_into_a_run_dir_and_a_run_into_a_sweep_dir_are_refused(done_run, done_sweep, tmp_path, in_process,
                                                                       capfd):
    run, sweep = tmp_path / "run", tmp_path / "sw"
    shutil.copytree(done_run, run)
    shutil.copytree(done_sweep, sweep)
    before_run, before_sweep = snapshot(run), snapshot(sweep)
    capfd.readouterr()
    p = in_process("-m", "seed=0,1", *TINY, f"hydra.sweep.dir={run}")
    one_line_refusal_here(p, capfd, "hydra.sweep.dir", "single run")
    q = in_process(*TINY, f"hydra.run.dir={sweep}")
    one_line_refusal_here(q, capfd, "sweep", "multirun.yaml")
    assert snapshot(run) == before_run and snapshot(sweep) == before_sweep


# 11 ------------------------------------------------------------------------------------------

def test_hydra_options_do_not_hide_refusals(tmp_path):
    p = genexp("train", "steps=0", "hydra.job.chdir=true", cwd=tmp_path)
    one_line_refusal(p, "steps")
    assert not (tmp_path / "outputs").exists()
    for env in ({"GENEXP_TRACEBACK": "1"}, {"HYDRA_FULL_ERROR": "1"}):
        q = genexp("train", "steps=0", cwd=tmp_path, env=env)
        assert q.returncode != 0 and "Traceback" in q.stderr
        assert not (tmp_path / "outputs").exists(), env
    # A relative dataset.path is read from where the command runs, as without chdir.
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.normal(size=(300, 4)).astype("float32"), y=np.arange(300) % 3)
    r = genexp("train", "dataset=npz", "dataset.path=data.npz", "labels=30", *TINY, "hydra.job.chdir=true",
               f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r" / "result.json").read_text())["status"] == "completed"


# 12 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,key", [
    ("cpu_threads=0", "cpu_threads"), ("cpu_threads=-3", "cpu_threads"), ("cpu_threads=abc", "cpu_threads"),
    ("dataset.val_size=-1", "dataset.val_size"), ("model.widths=[0]", "model.widths"),
    ("model.widths=[16,-2]", "model.widths"),
])
def test_small_values_are_refused_naming_their_key(override, key):
    from genexp.errors import GenexpError
    from genexp.train.setup import validate_config

    with pytest.raises(GenexpError) as e:
        validate_config(train_cfg(override))
    assert str(e.value).startswith(f"{key}=") and "\n" not in str(e.value)


def test_val_size_larger_than_the_data_blames_val_size():
    import torch

    from genexp.errors import GenexpError
    from genexp.train.setup import setup_run

    with pytest.raises(GenexpError) as e:
        setup_run(train_cfg("dataset.val_size=5000", "model.widths=[16]"), torch.device("cpu"))
    assert str(e.value).startswith("dataset.val_size=5000") and "labels" not in str(e.value)


def test_signal_during_start_up_leaves_nothing(in_process, tmp_path, monkeypatch):  # noqa: F811
    import genexp.train.loop as trainer

    real = trainer.log_setup

    def signalled(s):  # a SIGTERM that lands while the run is set up (after its first log line)
        real(s)
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(trainer, "log_setup", signalled)
    assert in_process(*TINY, f"hydra.run.dir={tmp_path / 'r'}") == 143
    assert not (tmp_path / "r").exists()


def test_refused_resume_in_a_sweep_is_counted_once(done_sweep, tmp_path):
    sweep = tmp_path / "sw"
    shutil.copytree(done_sweep, sweep)
    broken = sorted(p.parent for p in sweep.rglob("result.json"))[1]
    set_status(broken, "running")
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    p = genexp("train", "-m", "seed=0,1", *TINY, "resume=true", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert p.returncode == 1
    summary = p.stderr.strip().splitlines()[-1]
    assert ": 1 completed, 0 failed, 1 running;" in summary and "refused (no run dir)" not in summary, p.stderr


def test_resume_refuses_overrides_that_change_the_run(done_run, tmp_path, in_process, capfd):
    run = tmp_path / "copy"
    shutil.copytree(done_run, run)
    before = snapshot(run)
    capfd.readouterr()
    one_line_refusal_here(in_process(f"resume={run}", "steps=3000"), capfd, "steps=3000")
    one_line_refusal_here(in_process(f"resume={run}", "method=none", "labels=50"), capfd, "method", "labels")
    assert in_process(f"resume={run}", "device=cpu", "progress=false") == 0
    out, err = capfd.readouterr()
    assert "already complete" in out, err
    assert snapshot(run) == before
