"""A signal while an evaluation scores stops the run there and then (issue 36: within seconds in
every phase), not once the evaluation is over (minutes for a large test set on a CPU); the
checkpoint holds that evaluation as pending, and the resumed run, which runs it first, matches a
run never interrupted. In this process: the signal is sent from inside the scoring itself."""
import json
import os
import signal

import pytest
import torch

from genexp.train import loop as train_loop

pytestmark = pytest.mark.e2e  # whole runs: not in the fast subset (README)

RUN = ["steps=20", "eval_every=5", "checkpoint_every=20", "progress=false", "model.widths=[16]", "cpu_threads=1",
       "method=vat", "labels=30", "model.dropout=0.1"]
COMPARED = ("status", "val_acc", "test_acc", "best_step", "val_acc_final", "test_acc_final", "train_acc_final")


def evaluations(run) -> list[dict]:
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in ln.items() if k != "elapsed_s"} for ln in lines]


# (the evaluate() call the signal comes in, the step of that evaluation): each evaluation (steps
# 5, 10, 15, 20) scores validation, then test.
WHEN = {"val": (3, 10), "test": (4, 10), "last": (8, 20)}


@pytest.mark.parametrize("when", WHEN)
def test_a_signal_while_scoring_stops_at_once_and_the_resumed_run_matches(in_process, tmp_path, monkeypatch,
                                                                         when):
    assert in_process(*RUN, "hydra.run.dir=full") == 0
    real, calls, went_on = train_loop.evaluate, [], []
    call, at = WHEN[when]

    def evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)
            went_on.append(1)  # not reached: the handler raised as the signal arrived
        return real(*args, **kwargs)

    monkeypatch.setattr(train_loop, "evaluate", evaluate)
    assert in_process(*RUN, "hydra.run.dir=cut") == 128 + signal.SIGTERM
    assert went_on == []
    cut = tmp_path / "cut"
    record = json.loads((cut / "result.json").read_text())
    assert record["status"] == "interrupted"
    checkpoint = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert checkpoint["loop"]["step"] == at and checkpoint["loop"]["pending"] is not None
    assert [ln["step"] for ln in evaluations(cut)] == list(range(5, at, 5))  # its line is not written half-way

    monkeypatch.setattr(train_loop, "evaluate", real)
    assert in_process(f"resume={cut}") == 0
    full = json.loads((tmp_path / "full" / "result.json").read_text())
    resumed = json.loads((cut / "result.json").read_text())
    assert {k: resumed[k] for k in COMPARED} == {k: full[k] for k in COMPARED}
    assert evaluations(cut) == evaluations(tmp_path / "full")  # each evaluation once, the same numbers
    final = torch.load(cut / "checkpoint.pt", weights_only=True)["loop"]  # the completed run's, as the full run's
    assert final["step"] == 20 and final["pending"] is None
