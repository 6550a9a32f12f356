"""How well the float32 VAT power iteration finds the float64 direction, for ξ = 1e-6 and ξ = auto.

    python scripts/xi_precision.py [--device cuda]

For each model (at initialisation, eval mode) and input batch, runs two power iterations from
the same start in float64 on CPU (the reference) and in float32 on the device, and prints the
per-sample |cosine| between the two directions (mean and min). On CUDA it also shows cuDNN's
default TF32 convolutions, which genexp turns off inside the power iteration.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Iterator
from unittest import mock

import torch
import torch.nn.functional as F

from genexp.data.digits import load_digits
from genexp.models.cnn13 import CNN13
from genexp.models.mlp import MLP
from genexp.models.wrn import WideResNet
from genexp.regularizers import precision, vat
from genexp.regularizers.vat import vat_perturbation


@contextmanager
def tf32_kept(on: bool) -> Iterator[None]:
    """Simulate a power iteration that leaves cuDNN's TF32 default alone (what ports do)."""
    if not on:
        yield
        return

    @contextmanager
    def autocast_only(x: torch.Tensor) -> Iterator[None]:
        with torch.autocast(device_type=x.device.type, enabled=False):
            yield

    with mock.patch.object(vat, "full_precision", autocast_only), mock.patch.object(precision, "full_precision",
                                                                                    autocast_only):
        yield


def cases() -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    digits = load_digits()
    x = digits.x_train[:64].float()
    x = digits.preprocess(x) if digits.preprocess is not None else x
    torch.manual_seed(0)
    images = torch.randn(32, 3, 32, 32)
    return [("digits MLP 256-256, 64 digits", MLP(digits.input_shape, 10), x),
            ("WRN depth 10, random 3x32x32", WideResNet((3, 32, 32), 10, depth=10), images),
            ("CNN-13, random 3x32x32", CNN13((3, 32, 32), 10), images)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    device = torch.device(ap.parse_args().device)
    torch.backends.cudnn.allow_tf32 = True  # the PyTorch default, stated
    print(f"device {device}; |cos| with the float64 direction, mean / min over the batch")
    for name, model, x in cases():
        model.eval()
        init = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        ref = vat_perturbation(model.double(), x.double(), xi="auto", eps=1.0, power_iters=2, init=init)
        model = model.float().to(device)
        for tf32 in ([False, True] if device.type == "cuda" else [False]):
            for xi in (1e-6, "auto"):
                with tf32_kept(tf32):
                    r = vat_perturbation(model, x.to(device), xi=xi, eps=1.0, power_iters=2,
                                         init=init.float().to(device))
                cos = F.cosine_similarity(r.cpu().double().flatten(1), ref.flatten(1)).abs()
                label = f"{name}{' (TF32 kept)' if tf32 else ''}"
                print(f"{label:45s} xi={xi!s:6s}  mean {cos.mean():.4f}  min {cos.min():.4f}")


if __name__ == "__main__":
    main()
