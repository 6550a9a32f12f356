"""Issue 14: records are never lost or rewritten, interrupts are clean, bad values never start a run.

Real `genexp` subprocesses throughout (real signals for the interrupts).
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import genexp

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

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
    old = os.umask(0o022)
    try:
        p = genexp("train", *TINY, f"hydra.run.dir={run}", cwd=root)
    finally:
        os.umask(old)
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


# 4 -------------------------------------------------------------------------------------------

def test_refused_commands_change_nothing_and_leave_no_run_dir(done_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(done_run, run)
    before = snapshot(run)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", "config.yaml", "genexp.log"} <= {str(p) for p in before}
    p = genexp("train", f"hydra.run.dir={run}", "method=none", "labels=50", cwd=tmp_path)
    assert p.returncode == 2 and "already holds a run" in one_error_line(p)
    assert snapshot(run) == before  # .hydra/*.yaml, config.yaml, genexp.log: byte-identical
    # A sweep into a used sweep dir is refused before its multirun.yaml is rewritten.
    sweep = ["-m", "seed=0,1", *TINY, f"hydra.sweep.dir={tmp_path / 'sw'}"]
    assert genexp("train", *sweep, cwd=tmp_path).returncode == 0
    before = snapshot(tmp_path / "sw")
    again = genexp("train", *sweep[:-1], "labels=50", f"hydra.sweep.dir={tmp_path / 'sw'}", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a sweep" in one_error_line(again)
    assert snapshot(tmp_path / "sw") == before


@pytest.mark.parametrize("bad", ["labels=0", "labels=7", "method.eps=-1", "dataset=npz dataset.path=/no.npz"])
def test_refusal_before_training_leaves_no_run_dir(in_process, tmp_path, capsys, bad):
    # Found by the split (needs the data), the method, the loader: still nothing on disk.
    assert in_process(*TINY, *bad.split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert list(tmp_path.iterdir()) == []


# 6 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,key", [("method.eps=nan", "method.eps"), ("optim.lr=nan", "optim.lr"),
                                     ("optim.lr=inf", "optim.lr"), ("method.xi=-inf", "method.xi"),
                                     ("seed=abc", "seed"), ("split_seed=1.5", "split_seed"),
                                     ("device=tpu", "device"), ("optim.lr=fast", "optim.lr")])
def test_non_finite_and_mistyped_values_are_input_errors(in_process, tmp_path, capsys, bad, key):
    assert in_process(*TINY, bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and key in err[0] and "lower optim.lr" not in err[0], err
    assert list(tmp_path.iterdir()) == []  # no run dir, no outputs/


# 7 -------------------------------------------------------------------------------------------

def test_records_and_tables_follow_the_umask(done_run, tmp_path, capsys):
    from genexp.runs.files import atomic_write_json
    from genexp.tables import table

    # result.json of a real run made under umask 022: readable by others, like config.yaml
    assert (done_run / "result.json").stat().st_mode & 0o777 == 0o644
    assert (done_run / "config.yaml").stat().st_mode & 0o777 == 0o644
    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        assert table.main([str(done_run), "--format", "all", "--out", str(tmp_path / "t")]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    for name in ("r.json", "t.md", "t.csv", "t.tex"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name


# 8 -------------------------------------------------------------------------------------------

def test_progress_bar_is_one_readable_line_at_80_columns():
    import io

    from rich.console import Console

    from genexp.runs.progress import TrainProgress

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None, legacy_windows=False)
    bar = TrainProgress(15000, console=console)
    bar.update(12000, loss=0.123456, train_acc=0.95, val_acc=0.9012, test_acc=0.9123)
    with console.capture() as cap:
        console.print(bar.progress.get_renderable())
    rows = [ln for ln in cap.get().splitlines() if ln.strip()]
    assert len(rows) == 1 and len(rows[0]) <= 80, rows
    assert "12000/15000" in rows[0] and "val 90.1" in rows[0] and "test 91.2" in rows[0]
    bar.evaluating("test", 20480, 25000)
    with console.capture() as cap:
        console.print(bar.progress.get_renderable())
    rows = [ln for ln in cap.get().splitlines() if ln.strip()]
    assert len(rows) == 1 and "eval test 20480/25000" in rows[0]


# 3 -------------------------------------------------------------------------------------------

def test_without_validation_best_is_defined_as_final_and_recorded(in_process, tmp_path, capsys):
    # dataset.val_size=0 used to record val_acc 0.0 and the first evaluation's test_acc as "best".
    assert in_process("steps=6", "eval_every=2", "progress=false", "cpu_threads=1", "dataset.val_size=0",
                      f"hydra.run.dir={tmp_path / 'r'}") == 0
    r = json.loads((tmp_path / "r" / "result.json").read_text())
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert r["n_val"] == 0 and r["val_acc"] is None and all(x["val_acc"] is None for x in lines)
    assert r["selection"].startswith("final") and r["best_step"] == 6
    assert r["test_acc"] == r["test_acc_final"] == lines[-1]["test_acc"]
    assert "at the final step (no validation set)" in capsys.readouterr().out


# 9 -------------------------------------------------------------------------------------------

def test_divergence_is_noticed_at_the_step_not_at_evaluation(in_process, tmp_path, capsys):
    assert in_process("method=none", "optim=sgd", "optim.lr=1e12", "optim.schedule=constant", "steps=40",
                      "eval_every=40", "checkpoint_every=40", "progress=false", "cpu_threads=1",
                      f"hydra.run.dir={tmp_path / 'r'}") == 1
    r = json.loads((tmp_path / "r" / "result.json").read_text())
    step = int(r["reason"].split("at step ")[1].split(";")[0])
    assert r["status"] == "failed" and "non-finite" in r["reason"] and step < 40
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
