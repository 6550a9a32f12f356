"""Issue 14: records are never lost or rewritten, interrupts are clean, bad values never start a run.

Real `genexp` subprocesses throughout (real signals for the interrupts).
"""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import genexp

TINY = ["steps=4", "eval_every=2", "checkpoint_every=2", "progress=false", "cpu_threads=1"]
COMPARED = ("val_acc", "test_acc", "best_step", "val_acc_final", "test_acc_final", "train_acc_final")
LONG = ["method=vat", "labels=30", "steps=900", "eval_every=150", "checkpoint_every=10", "progress=false",
        "model.dropout=0.1", "cpu_threads=1"]


def snapshot(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("done")
    run = root / "run"
    p = genexp("train", *TINY, f"hydra.run.dir={run}", cwd=root)
    assert p.returncode == 0, p.stderr
    return run


# 1 -------------------------------------------------------------------------------------------

def test_corrupt_checkpoint_never_touches_the_record(done_run, tmp_path):
    rng = __import__("random").Random(0)
    copy = tmp_path / "copy"
    shutil.copytree(done_run, copy)
    (copy / "checkpoint.pt").write_bytes(bytes(rng.randrange(256) for _ in range(5000)))
    before = snapshot(copy)
    # A completed run: resuming says so and changes nothing (even with a corrupt checkpoint).
    p = genexp("train", "resume=true", f"hydra.run.dir={copy}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "already complete" in p.stdout and "nothing was changed" in p.stdout
    assert snapshot(copy) == before
    # An unfinished run with an unreadable checkpoint: one line, exit 2, every file as it was.
    record = json.loads((copy / "result.json").read_text())
    (copy / "result.json").write_text(json.dumps({**record, "status": "running"}))
    before = snapshot(copy)
    for how in (["resume=true", f"hydra.run.dir={copy}"], [f"resume={copy}"]):
        q = genexp("train", *how, cwd=tmp_path)
        assert q.returncode == 2
        line = one_error_line(q)
        assert "unreadable" in line and "weights_only" not in line
        assert snapshot(copy) == before
    assert not (tmp_path / "outputs").exists()  # resume=<dir> left no timestamped dir


# 5 -------------------------------------------------------------------------------------------

def _checkpoint_step(run_dir: Path) -> int:
    import torch

    try:
        return torch.load(run_dir / "checkpoint.pt", weights_only=True)["loop"]["step"]
    except Exception:
        return -1


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    p = genexp("train", *LONG, f"hydra.run.dir={root / 'run'}", cwd=root)
    assert p.returncode == 0, p.stderr
    return json.loads((root / "run" / "result.json").read_text())


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_records_and_resumes_to_the_same_result(uninterrupted, tmp_path, sig, code):
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "genexp", "train", *LONG, f"hydra.run.dir={run}"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 120
    while _checkpoint_step(run) < 30 and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before the signal; make it longer"
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == sig.name
    step = record["step"]
    assert 30 <= step < 900 and f"at step {step} of 900" in lines[0]
    assert _checkpoint_step(run) == step  # saved at the step it stopped, not at the last periodic one
    command = lines[0].split("resume with: ", 1)[1]
    args = shlex.split(command)
    assert args[:2] == ["genexp", "train"] and args[2] == f"resume={run}"
    r = genexp(*args[1:], "progress=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    resumed = json.loads((run / "result.json").read_text())
    assert resumed["status"] == "completed"
    assert {k: resumed[k] for k in COMPARED} == {k: uninterrupted[k] for k in COMPARED}
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [150, 300, 450, 600, 750, 900]


# 4 -------------------------------------------------------------------------------------------

def test_refused_commands_change_nothing_and_leave_no_run_dir(done_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(done_run, run)
    before = snapshot(run)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", "config.yaml", "genexp.log"} <= {str(p) for p in before}
    p = genexp("train", f"hydra.run.dir={run}", "method=none", "labels=50", cwd=tmp_path)
    assert p.returncode == 2 and "already holds a run" in one_error_line(p)
    assert snapshot(run) == before  # .hydra/*.yaml, config.yaml, genexp.log: byte-identical
    # Refusals before training (found by the split, the method, the config) leave no run dir.
    work = tmp_path / "work"
    work.mkdir()
    for bad in ("labels=0", "labels=7", "method.eps=-1"):
        q = genexp("train", *TINY, bad, cwd=work)
        assert q.returncode == 2, q.stderr
        one_error_line(q)
        assert list(work.iterdir()) == [], bad
    # A sweep into a used sweep dir is refused before its multirun.yaml is rewritten.
    sweep = ["-m", "seed=0,1", *TINY, f"hydra.sweep.dir={tmp_path / 'sw'}"]
    assert genexp("train", *sweep, cwd=tmp_path).returncode == 0
    before = snapshot(tmp_path / "sw")
    again = genexp("train", *sweep[:-1], "labels=50", f"hydra.sweep.dir={tmp_path / 'sw'}", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a sweep" in one_error_line(again)
    assert snapshot(tmp_path / "sw") == before


# 6 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,key", [("method.eps=nan", "method.eps"), ("optim.lr=nan", "optim.lr"),
                                     ("optim.lr=inf", "optim.lr"), ("seed=abc", "seed"), ("device=tpu", "device")])
def test_non_finite_and_mistyped_values_are_input_errors(tmp_path, bad, key):
    p = genexp("train", *TINY, bad, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    line = one_error_line(p)
    assert key in line and "lower optim.lr" not in line
    assert list(tmp_path.iterdir()) == []  # no run dir, no outputs/
