"""Progress where no terminal watches (nohup, Slurm, a pipe): a log line at every evaluation, on
the console and in genexp.log; training loss terms every log_every steps in metrics.jsonl and
TensorBoard, resumed exactly; a line now and then while texts are encoded."""
from __future__ import annotations

import io
import json
import logging
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from helpers import genexp, train_cfg
from rich.console import Console

from genexp.errors import GenexpError
from genexp.runs.progress import Every, TrainProgress, duration
from genexp.train import loop as trainer
from genexp.train.checkpoint import run_id
from genexp.train.interrupt import Interrupted, StopOnSignal

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

SMALL = ["labels=30", "batch_size=16", "unlabeled_batch_size=32", "device=cpu", "cpu_threads=1", "progress=false",
         "model.widths=[16]", "steps=20", "eval_every=10"]
LINE = re.compile(r"step (\d+)/20 \| train_loss [\d.]+ train_sup [\d.]+ train_vat [\d.]+ \| val_acc [\d.]+% "
                  r"test_acc [\d.]+% \| elapsed \d+s, left (\d+s|\?) \([\d.e+]+ steps/s\)")


@pytest.fixture(autouse=True)
def threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_an_evaluation_writes_a_line_to_genexp_log_and_the_console(tmp_path):
    run = tmp_path / "run"
    p = genexp("train", "method=vat", *SMALL, f"hydra.run.dir={run}", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    logged = [m.group(1) for m in LINE.finditer((run / "genexp.log").read_text())]
    shown = [m.group(1) for m in LINE.finditer(p.stdout + p.stderr)]
    assert logged == shown == ["10", "20"], (run / "genexp.log").read_text()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_with_the_bar_on_a_terminal_the_line_goes_everywhere_but_the_terminal(tmp_path):
    logger = logging.getLogger("genexp.test_log_lines")
    logger.setLevel(logging.INFO)
    console_out, redirected = Tty(), io.StringIO()  # the terminal; stdout sent to a file
    handlers = [logging.StreamHandler(console_out), logging.StreamHandler(redirected),
                logging.FileHandler(tmp_path / "genexp.log", delay=True)]
    for h in handlers:
        logger.addHandler(h)
    try:
        terminal = Console(file=io.StringIO(), force_terminal=True, width=120)
        with TrainProgress(10, console=terminal) as bar:
            assert bar.enabled
            bar.note(logger, "step %d/%d | with the bar", 5, 10)
        with TrainProgress(10, enabled=False, console=terminal) as bar:
            bar.note(logger, "step %d/%d | without it", 10, 10)
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
    assert (tmp_path / "genexp.log").read_text() == "step 5/10 | with the bar\nstep 10/10 | without it\n"
    assert console_out.getvalue() == "step 10/10 | without it\n"
    assert redirected.getvalue() == "step 5/10 | with the bar\nstep 10/10 | without it\n"


def test_log_every_writes_training_terms_between_evaluations(tmp_path):
    every = trainer.train(train_cfg("method=vat", *SMALL, "log_every=1"), tmp_path / "every")
    fives = trainer.train(train_cfg("method=vat", *SMALL, "log_every=5"), tmp_path / "fives")
    never = trainer.train(train_cfg("method=vat", *SMALL, "log_every=0"), tmp_path / "never")
    # How a run is watched changes neither its result nor its identity.
    drop = ("wall_time_s", "train_time_s", "step_time_ms", "step_time_ms_median", "run_dir")
    assert [{k: v for k, v in r.items() if k not in drop} for r in (every, never)] == \
        [{k: v for k, v in r.items() if k not in drop} for r in (fives, fives)]
    cfgs = [train_cfg("method=vat", *SMALL, f"log_every={n}") for n in (0, 5)]
    assert run_id(cfgs[0]) == run_id(cfgs[1])

    lines = records(tmp_path / "fives")
    assert [(x["step"], "test_acc" in x) for x in lines] == [(5, False), (10, True), (15, False), (20, True)]
    for x in lines[0], lines[2]:  # no accuracy: readers tell them from evaluations
        assert set(x) == {"step", "lr", "train_loss", "train_sup", "train_vat", "elapsed_s"}
    assert [x["step"] for x in records(tmp_path / "never")] == [10, 20]
    evals = [{k: v for k, v in x.items() if k != "elapsed_s"} for x in records(tmp_path / "fives") if "test_acc" in x]
    assert evals == [{k: v for k, v in x.items() if k != "elapsed_s"} for x in records(tmp_path / "never")]

    # Each line's terms are the means since the previous line: log_every=1 gives each step's own.
    per_step = {x["step"]: x for x in records(tmp_path / "every") if "test_acc" not in x}
    assert sorted(per_step) == [*range(1, 10), *range(11, 20)]
    for line, steps in ((lines[0], range(1, 6)), (lines[2], range(11, 16))):
        for key in ("train_loss", "train_sup", "train_vat"):
            assert line[key] == pytest.approx(sum(per_step[s][key] for s in steps) / 5, rel=1e-5)

    tb = scalars(tmp_path / "fives", "train_loss")
    assert [s for s, _ in tb] == [5, 10, 15, 20]
    assert [v for _, v in tb] == pytest.approx([x["train_loss"] for x in lines], rel=1e-6)
    assert [s for s, _ in scalars(tmp_path / "fives", "train_vat")] == [5, 10, 15, 20]
    assert [s for s, _ in scalars(tmp_path / "fives", "test_acc")] == [10, 20]


class StopAfter(StopOnSignal):
    """A SIGTERM after `steps` steps (the trainer reads `signum` once while setting up, then once per step)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.reads, self.steps = 0, steps

    @property
    def signum(self) -> int | None:
        self.reads += 1
        return signal.SIGTERM if self.reads > self.steps else None

    @signum.setter
    def signum(self, value: int | None) -> None:
        pass


@pytest.mark.parametrize("stop_at", [7, 9])  # inside a log_every window; on a log_every line
def test_a_resumed_run_logs_what_an_uninterrupted_one_does(tmp_path, stop_at):
    cfg = train_cfg("method=vat", *SMALL, "log_every=3", "checkpoint_every=4")
    trainer.train(cfg, tmp_path / "full")
    run = tmp_path / "run"
    with pytest.raises(Interrupted) as stopped:
        trainer.train(cfg, run, stop=StopAfter(stop_at))
    assert stopped.value.step == stop_at
    # TensorBoard reads a dir's event files in name order: <time s>.<host>.<pid>.<writer count>. A real
    # resume is a later process; in one process within one second the count decides, and ".10" sorts
    # before ".9" (a flake whenever this test's writers crossed that count).
    time.sleep(1.1)
    trainer.train(cfg, run, resume_from=run / "checkpoint.pt")

    def strip(r: Path) -> list[dict]:
        return [{k: v for k, v in x.items() if k != "elapsed_s"} for x in records(r)]

    assert [x["step"] for x in records(run)] == [3, 6, 9, 10, 12, 15, 18, 20]
    assert strip(run) == strip(tmp_path / "full")
    for tag in ("train_loss", "train_vat", "val_acc"):
        assert scalars(run, tag) == scalars(tmp_path / "full", tag)


def test_log_every_must_be_a_non_negative_integer(tmp_path):
    with pytest.raises(GenexpError, match=r"log_every=-1 must be an integer >= 0"):
        trainer.train(train_cfg("method=vat", *SMALL, "log_every=-1"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_every_is_due_each_tenth_or_after_its_seconds(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("genexp.runs.progress.time.perf_counter", lambda: now[0])
    every = Every(1000)
    assert [d for d in range(1, 1001) if every.due(d)] == list(range(100, 1001, 100))
    every = Every(1000, seconds=30.0)
    now[0] = 31.0
    assert every.due(5) and not every.due(6)  # a slow loop still shows it is alive
    assert duration(42) == "42s" and duration(185) == "3m05s" and duration(3720) == "1h02m"


def test_tables_pool_and_pair_runs_recorded_before_log_every_with_new_ones(tmp_path, capsys):
    """log_every says how a run was watched: a run dir recorded before it existed (no key) and runs
    with any log_every share cells and pair in `genexp table --compare`."""
    import csv

    import yaml

    from genexp.tables import table

    accs = {"none": [0.80, 0.81, 0.79, 0.82], "vat": [0.83, 0.85, 0.80, 0.86]}
    for method, values in accs.items():
        for seed, acc in enumerate(values):
            d = tmp_path / "o" / f"{method}_s{seed}"
            d.mkdir(parents=True)
            config = {"seed": seed, "labels": 20, "steps": 100, "method": {"name": method}, "optim": {"lr": 1e-3}}
            config |= {} if seed == 0 else {"log_every": 10 * seed}  # seed 0 ran before the key
            (d / "config.yaml").write_text(yaml.safe_dump(config))
            (d / "result.json").write_text(json.dumps({
                "status": "completed", "dataset": "digits", "model": "mlp", "method": method, "steps": 100,
                "labels": 20, "seed": seed, "split_seed": 0, "test_acc": acc}))
    rc = table.main([str(tmp_path / "o"), "--compare", "method=none", "--format", "csv", "--layout", "flat"])
    err = capsys.readouterr().err
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO((tmp_path / "o" / "table.csv").read_text())))
    assert [(r["method"], r["n"]) for r in rows] == [("none", "4"), ("vat", "4")], rows
    assert rows[1]["n_pairs"] == "4" and rows[1]["unpaired"] == "0"


def test_encoding_texts_logs_a_line_each_tenth(caplog):
    from genexp.data import features

    with caplog.at_level(logging.INFO, logger="genexp.data.features"):
        counter = features._Counter(TrainProgress(100, enabled=False), 100)
        for _ in range(20):
            counter.advance(5)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encoding texts")]
    # Every tenth but the last: "features: encoded N texts in ..." follows at once.
    assert [line.split(" | ")[0] for line in lines] == [f"encoding texts: {n}/100 ({n}%)" for n in range(10, 100, 10)]
    assert all(re.search(r"\| elapsed \d+s, left \S+ \([\d.e+]+ texts/s\)$", line) for line in lines), lines


def test_a_resume_takes_log_every_from_the_command(tmp_path):
    """How often a run logs is not what it computes: resume=... log_every=N is not refused."""
    run = tmp_path / "run"
    first = genexp("train", "labels=30", "steps=6", "eval_every=3", "cpu_threads=1", "progress=false",
                   f"hydra.run.dir={run}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = genexp("train", f"resume={run}", "log_every=2", "progress=false", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout + again.stderr
    refused = genexp("train", f"resume={run}", "steps=9", "progress=false", cwd=tmp_path)
    assert refused.returncode == 2 and "takes only device=, progress=, logger=, log_every=" in refused.stderr
