"""One run setup for `genexp train` and `genexp bench`; the evaluation EMA's key; resuming runs
recorded before the loop dropped `best_state` and before `eval_ema` had its name."""
import json
import signal
from pathlib import Path

import pytest
import torch
from helpers import genexp, train_cfg

from genexp.command import bench
from genexp.data.split import Split
from genexp.errors import GenexpError
from genexp.train import loop as trainer
from genexp.train.interrupt import Interrupted, StopOnSignal
from genexp.train.setup import validate_config

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

SMALL = ["labels=30", "batch_size=16", "unlabeled_batch_size=32", "device=cpu", "cpu_threads=1", "progress=false",
         "model.widths=[32]"]
COMPARED = ("val_acc", "test_acc", "best_step", "val_acc_final", "test_acc_final", "train_acc_final")


@pytest.fixture
def threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_bench_times_the_split_train_uses(tmp_path, monkeypatch, threads):
    """bench's labelled and unlabelled pools are train's for the same config (labeled_strategy and
    unlabeled_includes_labeled included)."""
    overrides = [*SMALL, "labeled_strategy=random", "unlabeled_includes_labeled=true"]
    trainer.train(train_cfg(*overrides, "steps=1", "eval_every=1"), tmp_path / "run")
    split = Split.load(tmp_path / "run" / "split.json")
    sources = []
    timer_init = bench.MethodTimer.__init__

    def recording_init(self, model0, method, cfg, source, *args, **kwargs):
        sources.append(source)
        timer_init(self, model0, method, cfg, source, *args, **kwargs)

    monkeypatch.setattr(bench.MethodTimer, "__init__", recording_init)
    bench.run(overrides, None, iters=1, warmup=0, textbook=False)
    assert sources
    for source in sources:
        assert source.lab.pool.tolist() == split.labeled.tolist()
        assert source.unl.pool.tolist() == split.unlabeled.tolist()


def test_eval_ema_is_checked_and_the_old_key_is_refused():
    with pytest.raises(GenexpError, match=r"eval_ema=1\.5 must be in \[0, 1\)"):
        validate_config(train_cfg("eval_ema=1.5"))
    with pytest.raises(GenexpError, match="eval_ema='high' must be a number"):
        validate_config(train_cfg("eval_ema=high"))
    with pytest.raises(Exception, match="ema_decay"):  # no silent no-op: the old top-level key is unknown
        train_cfg("ema_decay=0.99")
    assert train_cfg("method=mean_teacher").method.ema_decay == 0.99  # the mean teacher's keeps its name


class StopAfter(StopOnSignal):
    """A SIGTERM that arrives after `steps` steps (the trainer reads `signum` once while setting up,
    then once per step)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.reads, self.steps = 0, steps

    @property
    def signum(self):
        self.reads += 1
        return signal.SIGTERM if self.reads > self.steps else None

    @signum.setter
    def signum(self, value):
        pass


def test_a_run_recorded_with_ema_decay_and_best_state_resumes_to_the_same_result(tmp_path, threads):
    cfg = train_cfg(*SMALL, "steps=6", "eval_every=2", "checkpoint_every=4", "eval_ema=0.9")
    full = trainer.train(cfg, tmp_path / "full")
    old = tmp_path / "old"
    with pytest.raises(Interrupted) as stopped:
        trainer.train(cfg, old, stop=StopAfter(3))
    assert stopped.value.step == 3
    # What an older genexp recorded: the top-level key `ema_decay`, and `best_state` in the loop.
    config = (old / "config.yaml").read_text()
    assert "\neval_ema: 0.9\n" in config
    (old / "config.yaml").write_text(config.replace("\neval_ema: 0.9\n", "\nema_decay: 0.9\n"))
    ck = torch.load(old / "checkpoint.pt", weights_only=True)
    ck["loop"]["best_state"] = {k: v.clone() for k, v in ck["model"].items()}
    torch.save(ck, old / "checkpoint.pt")

    p = genexp("train", f"resume={old}", "progress=false", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    resumed = json.loads((old / "result.json").read_text())
    assert resumed["status"] == "completed"
    assert {k: resumed[k] for k in COMPARED} == {k: full[k] for k in COMPARED}

    def metrics(run: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(ln).items() if k != "elapsed_s"}
                for ln in (run / "metrics.jsonl").read_text().splitlines()]

    assert metrics(old) == metrics(tmp_path / "full")
    final = torch.load(old / "checkpoint.pt", weights_only=True)
    assert "best_state" not in final["loop"] and final["config"]["eval_ema"] == 0.9
    assert final["ema"] is not None  # the EMA was evaluated, as the old record asked
