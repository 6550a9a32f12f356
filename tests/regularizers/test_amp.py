"""bf16 autocast (`amp`): the VAT power iteration keeps float32 on both sides of its finite
difference, and `amp` on the command line is checked."""
import pytest
import torch
import torch.nn.functional as F
from helpers import genexp, train_cfg
from torch import nn

from genexp.regularizers.vat import KLTarget, matrix_vat_perturbation, vat_direction
from genexp.train.setup import autocast_for


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 5))


def _direction(model: nn.Module, x: torch.Tensor, amp: bool) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        with torch.no_grad():
            target = KLTarget(model(x))  # the clean pass runs under the step's autocast, as in method=vat
        return vat_direction(model, x, xi="auto", power_iters=1, target=target,
                             generator=torch.Generator().manual_seed(1))


def test_vat_direction_under_cpu_autocast_matches_float32():
    """Against a bf16 p(x) the float32 probe would measure bf16 rounding (cosine ~0 with the true
    direction); the direction under autocast must be float32's."""
    model, x = _mlp(), torch.randn(64, 20, generator=torch.Generator().manual_seed(2))
    exact, amp = _direction(model, x, False), _direction(model, x, True)
    assert amp.dtype == torch.float32
    assert F.cosine_similarity(exact, amp, dim=1).min() > 0.99


def test_matrix_vat_under_cpu_autocast_matches_float32():
    torch.manual_seed(3)
    emb, x = torch.randn(30, 8), torch.randint(0, 30, (16, 6))
    head = nn.Linear(8, 3)

    def logits_at(w: torch.Tensor) -> torch.Tensor:
        return head(torch.tanh(F.embedding(x, w)).mean(1))

    def direction(amp: bool) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            with torch.no_grad():
                target = logits_at(emb)
            return matrix_vat_perturbation(logits_at, emb, target_logits=target, xi=1e-3, eps=1.0, power_iters=1,
                                           generator=torch.Generator().manual_seed(4))

    assert F.cosine_similarity(direction(False).flatten(), direction(True).flatten(), dim=0) > 0.99


def test_autocast_for_cpu_only_when_asked():
    cpu = torch.device("cpu")
    w = torch.randn(4, 4)
    for amp, dtype in (("auto", torch.float32), (False, torch.float32), ("bf16", torch.bfloat16), (True, torch.bfloat16)):
        with autocast_for(cpu, amp)():
            assert (w @ w).dtype == dtype, amp


@pytest.mark.parametrize("value", ["fp8", "1"])
def test_bad_amp_is_one_line(tmp_path, value):
    p = genexp("train", "dataset=random", f"amp={value}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "amp=" in p.stderr and "Traceback" not in p.stderr


def test_vat_trains_under_cpu_bf16(tmp_path):
    """amp=bf16 on CPU through a whole run with BatchNorm, hidden noise and BatchNorm re-estimation
    (the packed LSTM's run: tests/models/test_models.py)."""
    from genexp.train.loop import train

    cfg = train_cfg("method=vat", "amp=bf16", "device=cpu", "cpu_threads=1", "steps=3", "eval_every=3", "progress=false",
                    "batch_size=8", "unlabeled_batch_size=8", "dataset=random", "labels=20", "model.widths=[16]",
                    "model.batchnorm=true", "model.hidden_noise=0.5", "bn_recalibrate=64")
    run = tmp_path / "run"
    run.mkdir()
    result = train(cfg, run)
    assert result["status"] == "completed" and 0.0 <= result["test_acc"] <= 1.0
