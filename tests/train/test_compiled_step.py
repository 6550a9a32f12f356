"""compile=true: the method's whole loss compiled into one graph gives the eager loss and
gradients (within float32 reassociation: relative 1e-4) and does not recompile from step to step."""
import copy

import pytest
import torch
from helpers import train_cfg

from genexp.train.batches import train_step
from genexp.train.build import build_method, build_optimizer
from genexp.train.compiled import CompiledLoss, wants_compile
from genexp.train.distributed import Dist
from genexp.train.setup import prepare, setup_run

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_thread")]


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def setup(*overrides: str, device: str = "cpu"):
    cfg = train_cfg("method=vat", "labels=50", "batch_size=16", "unlabeled_batch_size=32", "model.widths=[32,32]",
                    f"device={device}", "cpu_threads=1", "amp=false", *overrides)
    device = prepare(cfg, Dist())
    run = setup_run(cfg, device, Dist(), None)
    method = build_method(cfg)
    method.setup(run.model, num_classes=run.data.num_classes, num_train=len(run.train), device=device)
    return cfg, run, method


def loss_and_grads(model, loss_fn, batch):
    model.zero_grad(set_to_none=True)
    out = loss_fn(model, batch)
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batchnorm", [True, False])  # two passes with frozen statistics / one fused pass
def test_compiled_vat_step_matches_eager(batchnorm, device):
    cfg, run, method = setup(f"model.batchnorm={str(batchnorm).lower()}", device=device)
    batch = run.source.next(0, True)
    state = batch.generator.get_state()
    eager_model, compiled_model = run.model, copy.deepcopy(run.model)
    eager_loss, eager_grads = loss_and_grads(eager_model, method.loss, batch)
    batch.generator.set_state(state)  # the compiled step draws the same Gaussian start
    compiled = CompiledLoss(method)
    compiled_loss, compiled_grads = loss_and_grads(compiled_model, compiled, batch)
    assert compiled.eager_steps == 0
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-6)
    for g_c, g_e in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(g_c, g_e, rtol=1e-4, atol=1e-5)
    # BatchNorm's running statistics moved in the supervised pass only, alike in both
    for b_c, b_e in zip(compiled_model.buffers(), eager_model.buffers()):
        torch.testing.assert_close(b_c.float(), b_e.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_step_does_not_recompile_across_steps(device):
    cfg, run, method = setup("model.batchnorm=true", device=device)
    optimizer, _ = build_optimizer(cfg, run.model)
    params = [p for p in run.model.parameters() if p.requires_grad]
    compiled = CompiledLoss(method)
    amp = run.amp
    train_step(run.model, method, optimizer, run.source.next(0, True), amp=amp, params=params, loss=compiled)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(1, 4):  # new batches, new noise, a changed step count: same graph
            train_step(run.model, method, optimizer, run.source.next(step, True), amp=amp, params=params,
                       loss=compiled)
    assert compiled.eager_steps == 0


def test_compile_auto_leaves_short_runs_and_untraceable_methods_eager():
    cfg, run, method = setup("model.batchnorm=true")
    batch = run.source.next(0, True)
    assert wants_compile("auto", method, run.model, batch, 1e9)[0] is False  # the compilation would not pay
    assert wants_compile("auto", method, run.model, batch, 1e15)[0] is True
    assert wants_compile(False, method, run.model, batch, 1e15)[0] is False
    method.warm_start = True  # a per-example buffer written each step: eager
    ok, why = wants_compile(True, method, run.model, batch, 1e15)
    assert ok is False and "eager" in why
