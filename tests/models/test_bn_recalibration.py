"""Evaluation with BatchNorm statistics re-estimated on unlabelled data (`bn_recalibrate`)."""
import json

import pytest
import torch
from helpers import FAST, genexp
from torch import nn

from genexp.models.batchnorm import recalibrated

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin, self.bn = nn.Linear(3, 4), nn.BatchNorm1d(4)

    def forward(self, x, mask=None):
        return self.bn(self.lin(x))


def test_copy_gets_the_data_average_and_the_model_is_untouched():
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(400, 3) * 3 + 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    copy_ = recalibrated(model, x, torch.arange(300), examples=10_000, batch_size=100, seed=0)
    assert copy_ is not model and not copy_.training
    with torch.no_grad():
        h = model.lin(x[:300])
    # equal batches: the cumulative average of batch means is the mean over all 300 rows
    assert torch.allclose(copy_.bn.running_mean, h.mean(0), atol=1e-5)
    assert not torch.allclose(model.bn.running_mean, h.mean(0), atol=1e-2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())  # training's random streams go on as without it


def test_examples_caps_the_rows_used_and_no_batchnorm_is_a_no_op():
    model = Net()
    x = torch.cat([torch.zeros(100, 3), torch.full((100, 3), 50.0)])
    few = recalibrated(model, x, torch.arange(200), examples=50, batch_size=25, seed=1)
    assert few.bn.num_batches_tracked.item() == 2
    plain = nn.Sequential(nn.Linear(3, 2))
    assert recalibrated(plain, x, torch.arange(200), examples=50, batch_size=25, seed=1) is plain


def test_train_with_recalibration_keeps_training_and_changes_only_evaluation(tmp_path):
    common = ("method=vat", "model.batchnorm=true", "labels=30", "seed=1", *FAST)
    runs = {}
    for n in (0, 500):
        run_dir = tmp_path / f"r{n}"
        p = genexp("train", *common, f"bn_recalibrate={n}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        runs[n] = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in runs[0]] == [r["train_loss"] for r in runs[500]]
    assert [r["test_loss"] for r in runs[0]] != [r["test_loss"] for r in runs[500]]


def test_bad_value_is_one_line(tmp_path):
    p = genexp("train", "bn_recalibrate=-5", *FAST, f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert p.returncode == 2 and "bn_recalibrate" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "bad").exists()
