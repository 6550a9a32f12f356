"""The inequality along training on the digits: the check at log-spaced steps of a plain run, and
none vs the parameter gradient penalty gp_param (same initialisation and batches) compared on
their input-gradient norms over the test set."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.errors import GenexpError
from genexp.models.mlp import ACTIVATIONS, MLP
from genexp.studies.inequality.check import activation_of, check, mlp_params, sides


@dataclass
class Config:
    depth: int = 2
    width: int = 256
    activation: str = "relu"
    samples: int = 256
    train_steps: int = 1000
    checkpoints: int = 3
    batch_size: int = 64
    labels: int = 0
    lr: float = 1e-3
    gp_weights: tuple[float, ...] = (0.01, 0.1, 1.0)
    seed: int = 0
    dtype: str = "float64"

    def validate(self) -> None:
        for key in ("width", "samples", "batch_size", "checkpoints"):
            if getattr(self, key) <= 0:
                raise GenexpError(f"--{key.replace('_', '-')}={getattr(self, key)} must be a positive integer")
        for key in ("depth", "train_steps", "labels"):
            if getattr(self, key) < 0:
                raise GenexpError(f"--{key.replace('_', '-')}={getattr(self, key)} must be >= 0")
        if self.activation not in ACTIVATIONS:
            raise GenexpError(f"--activation={self.activation} is not one of {', '.join(ACTIVATIONS)}")
        if not self.lr > 0 or any(not w > 0 for w in self.gp_weights):
            raise GenexpError("--lr and every --gp-weight must be > 0")


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """Step 0 (initialisation), then n roughly log-spaced steps ending at `steps`."""
    if steps == 0:
        return [0]
    out = {0, steps}
    for i in range(1, n):
        out.add(max(1, round(steps ** (i / n))) if steps > n else max(1, round(steps * i / n)))
    return sorted(out)


def _digits(cfg: Config, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from genexp.data.digits import load_digits

    data = load_digits()
    x, y = data.x_train.to(dtype), data.y_train
    if cfg.labels:
        g = torch.Generator().manual_seed(cfg.seed)
        idx = torch.randperm(len(y), generator=g)[:cfg.labels]
        x, y = x[idx], y[idx]
    return x, y, data.x_test.to(dtype), data.y_test


def _input_and_param_grads(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    s = sides(mlp_params(model), activation_of(model), model.embed(x).flatten(1), y, "loss")
    with torch.no_grad():
        acc = (model(x).argmax(-1) == y).double().mean().item()
    return {"test_acc": acc, "input_grad_sq_mean": s.gx2.mean().item(), "input_grad_sq_median": s.gx2.median().item(),
            "param_grad_sq_mean": s.rhs.mean().item(), "bound_mean": s.bound.mean().item()}


def _train(init: nn.Module, weight: float, cfg: Config, x: Tensor, y: Tensor,
           on_step: Callable[[nn.Module, int], None] = lambda model, step: None) -> nn.Module:
    """A copy of `init` trained with Adam on CE (+ weight·‖∇_θ CE‖² when weight > 0); on_step(model, step)
    after every step. The batches depend on cfg.seed only, so runs with different weights see the same."""
    from genexp.regularizers.gradient_penalty import param_gradient_penalty

    model = copy.deepcopy(init)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    params = [p for p in model.parameters()]
    g = torch.Generator().manual_seed(cfg.seed + 1)
    for step in range(1, cfg.train_steps + 1):
        idx = torch.randint(0, len(y), (min(cfg.batch_size, len(y)),), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        if weight > 0:
            loss = loss + weight * param_gradient_penalty(loss, params)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        on_step(model, step)
    return model


def run(cfg: Config, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    cfg.validate()
    dtype = {"float64": torch.float64, "float32": torch.float32}[cfg.dtype]
    started = time.perf_counter()
    x_tr, y_tr, x_te, y_te = _digits(cfg, dtype)
    x_chk, y_chk = x_te[:cfg.samples], y_te[:cfg.samples]
    torch.manual_seed(cfg.seed)
    init = MLP(tuple(x_tr.shape[1:]), 10, widths=[cfg.width] * cfg.depth, activation=cfg.activation).to(dtype)
    steps = checkpoint_steps(cfg.train_steps, cfg.checkpoints)
    out: dict[str, Any] = {"config": vars(cfg).copy(), "f": {"logit": "logit of the true class",
                                                             "loss": "cross-entropy loss l"},
                           "n_layers": cfg.depth + 1, "checks": [], "n_examples": len(y_chk)}

    def record(model: nn.Module, label: str, step: int) -> None:
        res = check(model, x_chk, y_chk)
        for kind, summary in res.items():
            out["checks"].append({"model": label, "step": step, "f": kind, **summary})
        log(f"checked {label} at step {step}")

    if 0 in steps:
        record(init, "none", 0)
    trained = {"none": _train(init, 0.0, cfg, x_tr, y_tr,
                              lambda model, step: record(model, "none", step) if step in steps else None)}
    for weight in cfg.gp_weights:
        method = f"gp_param λ={weight:g}"
        trained[method] = _train(init, weight, cfg, x_tr, y_tr)
        record(trained[method], method, cfg.train_steps)
    out["comparison"] = {m: _input_and_param_grads(model, x_te, y_te) for m, model in trained.items()}
    out["comparison_n_test"] = len(y_te)
    out["max_ratio"] = max(c["max_ratio"] for c in out["checks"])
    out["violations"] = sum(c["violations"] for c in out["checks"])
    out["holds"] = out["violations"] == 0
    out["elapsed_s"] = time.perf_counter() - started
    return out
