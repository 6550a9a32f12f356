"""CUDA checks (run with --rungpu on a machine with a GPU): the bf16 training path and VAT on the device."""
from __future__ import annotations

import json

import pytest
import torch
from helpers import FAST, genexp, results_under

from genexp.models.wrn import WideResNet
from genexp.regularizers import vat_perturbation

pytestmark = pytest.mark.gpu


def test_vat_direction_on_gpu_under_bf16_autocast_matches_cpu_float64():
    torch.manual_seed(0)
    model = WideResNet(input_shape=(3, 32, 32), num_classes=10, depth=10, width=2).eval()
    x = torch.randn(8, 3, 32, 32)
    # The same start direction on both devices: only the arithmetic differs.
    init = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    ref = vat_perturbation(model.double(), x.double(), xi="auto", eps=1.0, power_iters=2, init=init.double())
    model = model.float().cuda().to(memory_format=torch.channels_last)
    matmul = torch.get_float32_matmul_precision()
    inside = []

    def forward(z):
        inside.append((torch.is_autocast_enabled("cuda"), torch.backends.cudnn.allow_tf32))
        return model(z)

    with torch.autocast("cuda", dtype=torch.bfloat16):
        r = vat_perturbation(forward, x.cuda().contiguous(memory_format=torch.channels_last), xi="auto", eps=1.0,
                             power_iters=2, init=init.cuda(), model=model)
    assert inside and all(state == (False, False) for state in inside)  # no autocast, no TF32 inside
    assert torch.get_float32_matmul_precision() == matmul
    cos = torch.nn.functional.cosine_similarity(r.cpu().double().flatten(1), ref.flatten(1))
    # cuDNN's default TF32 convolutions gave 0.78-0.95 here; the power iteration turns TF32 off.
    assert cos.min() > 0.99, cos
    assert torch.backends.cudnn.allow_tf32  # and restores the setting


@pytest.mark.parametrize("model", ["cnn13", "wrn28_2"])
def test_train_on_cuda_with_bf16_and_compile(tmp_path, model):
    p = genexp("train", "dataset=random", f"model={model}", "method=vat", "device=cuda", "amp=bf16", "compile=true",
               "labels=100", "batch_size=32", "unlabeled_batch_size=64", *FAST, f"hydra.run.dir={tmp_path}/run",
               cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (res,) = results_under(tmp_path)
    assert res["status"] == "completed" and res["device"].startswith("cuda"), json.dumps(res)[:500]
    assert 0.0 <= res["test_acc"] <= 1.0
