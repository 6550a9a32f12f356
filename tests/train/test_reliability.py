"""Resume after SIGKILL, failed runs in sweeps, bad input, distributed training."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import checkpoint_step, genexp, one_line_refusal_here, results_under

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

COMPARED = ("val_acc", "test_acc", "best_step", "val_acc_final", "test_acc_final", "train_acc_final")
RUN = ["method=vat", "labels=30", "steps=600", "eval_every=100", "checkpoint_every=10", "progress=false",
       "model.dropout=0.1"]


def start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "genexp", "train", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run RUN describes, never interrupted: what every interrupted-and-resumed run must match."""
    root = tmp_path_factory.mktemp("full")
    assert genexp("train", *RUN, f"hydra.run.dir={root / 'full'}", cwd=root).returncode == 0
    return root / "full"


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, uninterrupted):
    full = uninterrupted
    killed = tmp_path / "killed"
    p = start([*RUN, f"hydra.run.dir={killed}"], tmp_path)
    deadline = time.time() + 120
    while checkpoint_step(killed) < 40 and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    interrupted = json.loads((killed / "result.json").read_text())
    assert interrupted["status"] == "running"
    at = checkpoint_step(killed)
    assert 0 < at < 600
    r = genexp("train", "resume=true", "progress=false", f"hydra.run.dir={killed}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((d / "result.json").read_text()) for d in (full, killed))
    assert b["status"] == "completed"
    assert {k: a[k] for k in COMPARED} == {k: b[k] for k in COMPARED}
    lines = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "test_acc" in x] == [100, 200, 300, 400, 500, 600]  # evaluations
    full_lines = (full / "metrics.jsonl").read_text().splitlines()
    killed_lines = (killed / "metrics.jsonl").read_text().splitlines()
    strip = lambda ln: {k: v for k, v in json.loads(ln).items() if k != "elapsed_s"}  # noqa: E731
    assert [strip(x) for x in full_lines] == [strip(x) for x in killed_lines]


def start_and_wait(run_dir: Path, cwd: Path, at_least: int) -> subprocess.Popen:
    p = start([*RUN, f"hydra.run.dir={run_dir}"], cwd)
    deadline = time.time() + 120
    while checkpoint_step(run_dir) < at_least and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be signalled; make it longer"
    return p


def test_sigterm_saves_records_and_resumes_to_the_same_result(tmp_path, uninterrupted):
    # What Slurm sends on preemption or at the time limit (then SIGKILL after KillWait).
    run = tmp_path / "run"
    p = start_and_wait(run, tmp_path, 40)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"
    step = record["step"]
    assert 40 <= step < 600 and f"SIGTERM at step {step} of 600" in lines[0]
    assert checkpoint_step(run) == step  # saved where it stopped, not at the last periodic checkpoint
    args = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert args == ["genexp", "train", f"resume={run}"]
    r = genexp(*args[1:], "progress=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    resumed = json.loads((run / "result.json").read_text())
    full = json.loads((uninterrupted / "result.json").read_text())
    assert resumed["status"] == "completed"
    assert {k: resumed[k] for k in COMPARED} == {k: full[k] for k in COMPARED}
    strip = lambda ln: {k: v for k, v in json.loads(ln).items() if k != "elapsed_s"}  # noqa: E731
    assert [strip(x) for x in (run / "metrics.jsonl").read_text().splitlines()] == \
        [strip(x) for x in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert not (tmp_path / "outputs").exists()  # resume=<dir> left no timestamped dir


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    run = tmp_path / "run"
    p = start_and_wait(run, tmp_path, 20)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "resume with: genexp train" in err
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGINT"
    assert checkpoint_step(run) == record["step"]


def test_resume_path_and_missing_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert genexp("train", "steps=4", "eval_every=2", "checkpoint_every=2", "progress=false",
                  f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    before = (run / "result.json").read_bytes()
    p = genexp("train", f"resume={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "resume=" in p.stderr
    assert (run / "result.json").read_bytes() == before
    # Resuming a finished run from its path re-enters at the end and completes immediately.
    q = genexp("train", f"resume={run}", "progress=false", cwd=tmp_path)
    assert q.returncode == 0, q.stderr
    assert json.loads((run / "result.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_failed_run_in_sweep_does_not_stop_others(tmp_path, launcher):
    # SGD at lr=1e12 diverges to a non-finite loss; the other run must still complete. Under
    # joblib the failing job runs in a worker process, and the sweep must still exit 1.
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "cpu_threads=1"] if launcher == "joblib" else []
    p = genexp("train", "-m", "method=none", "optim=sgd", "optim.lr=1e-3,1e12", "optim.schedule=constant", "steps=30",
               "eval_every=10", "progress=false", "model.widths=[64]", *extra, cwd=tmp_path)
    results = results_under(tmp_path / "outputs")
    statuses = sorted(r["status"] for r in results)
    assert statuses == ["completed", "failed"], p.stderr
    failed = next(r for r in results if r["status"] == "failed")
    assert "non-finite" in failed["reason"] and "\n" not in failed["reason"]
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert ("1 run(s) of the sweep failed" if launcher == "basic" else "and maybe others of the sweep failed") in p.stderr
    t = genexp("table", "outputs", cwd=tmp_path)
    assert t.returncode == 0
    assert "1" in (tmp_path / "outputs" / "table.csv").read_text().splitlines()[1].split(",")


def test_sweep_resumed_in_its_dir_changes_nothing_when_complete(tmp_path):
    # A requeued sweep reruns with resume=true: complete runs say so, multirun.yaml stays as it was.
    sweep = ["-m", "seed=0,1", "steps=4", "eval_every=2", "progress=false", f"hydra.sweep.dir={tmp_path / 'sw'}"]
    assert genexp("train", *sweep, cwd=tmp_path).returncode == 0
    before = {p: p.read_bytes() for p in sorted((tmp_path / "sw").rglob("*")) if p.is_file()}
    again = genexp("train", *sweep, "resume=true", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("already complete") == 2, again.stderr
    assert "Traceback" not in again.stderr
    after = {p: p.read_bytes() for p in sorted((tmp_path / "sw").rglob("*")) if p.is_file()}
    assert after == before
    assert not list((tmp_path / "sw").rglob("error.log"))


BAD_INPUT = [
    (["dataset=nope"], "dataset"),
    (["model=nope"], "model"),
    (["method=nope"], "method"),
    (["labels=100000"], "labels"),
    (["labels=3"], "labels"),
    (["labels=5"], "labels"),
    (["labels=2.5"], "labels"),
    (["method.eps=-1"], "method.eps"),
    (["method.xi=tiny"], "method.xi"),
    (["method.xi=null"], "method.xi"),
    (["method=vat", "method.xi=-1"], "method.xi"),
    (["method=noise", "method.sigma=-1"], "method.sigma"),
    (["dataset=npz", "dataset.path=/no/such/file.npz"], "dataset.path"),
    (["labels=all", "method=vat", "method.refresh_every=0"], "method.refresh_every"),
    (["optim.lr=-1"], "optim.lr"),
    (["optim.lr=-0.1"], "optim.lr"),
    (["steps=0"], "steps"),
    (["batch_size=-4"], "batch_size"),
    (["resume=/no/such/run"], "resume"),
    (["nosuchkey=1"], "nosuchkey"),
    (["device=cuda:7"], "device"),
]


@pytest.mark.parametrize("override,key", BAD_INPUT, ids=[" ".join(o) for o, _ in BAD_INPUT])
def test_bad_input_one_line_exit_2(tmp_path, in_process, capfd, override, key):
    # In this process (a refusal needs no interpreter of its own); test_cli.py's
    # test_bad_input_is_one_line checks one of them through a real `genexp` process.
    if override[0].startswith("device") and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "result.json").write_text('{"status": "completed"}')
    capfd.readouterr()
    code = in_process("steps=2", "progress=false", *override, f"hydra.run.dir={tmp_path / 'new'}")
    one_line_refusal_here(code, capfd, key)
    assert (earlier / "result.json").read_text() == '{"status": "completed"}'
    assert not (tmp_path / "new").exists()


def test_traceback_on_request(tmp_path):
    p = genexp("train", "steps=0", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path, env={"GENEXP_TRACEBACK": "1"})
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_two_process_gloo(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m", "genexp",
           "train", "method=vat", "labels=30", "steps=20", "eval_every=10", "progress=false", "device=cpu",
           f"hydra.run.dir={run}"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and result["world_size"] == 2
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [10, 20]
    # Only rank 0 wrote records: exactly one result.json under the working dir.
    assert len(list(tmp_path.rglob("result.json"))) == 1
