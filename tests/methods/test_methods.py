"""Methods: every config trains, each loss is the formula it claims, and a new method is a plugin."""
from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import genexp
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from torch import Tensor, nn

import genexp.train.loop as trainer
from genexp.errors import GenexpError
from genexp.methods.base import Batch, Method
from genexp.methods.fgm import FGM
from genexp.methods.gp_consistency import GPConsistency
from genexp.methods.gp_input import GPInput
from genexp.methods.gp_param import GPParam
from genexp.methods.mean_teacher import MeanTeacher
from genexp.methods.noise import Noise
from genexp.methods.noise_consistency import NoiseConsistency
from genexp.methods.pgd import PGD
from genexp.methods.pseudo_label import PseudoLabel
from genexp.methods.vat import VAT
from genexp.methods.vat_embedding_matrix import VATEmbeddingMatrix
from genexp.models.base import GenexpModel
from genexp.models.mlp import MLP
from genexp.regularizers.divergence import kl_from_logits
from genexp.train.build import build_method

CONFIG_DIR = Path(trainer.__file__).parents[1] / "configs" / "method"
ALL_METHODS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
TRAINABLE_ON_DIGITS = [m for m in ALL_METHODS if m != "vat_embedding_matrix"]
F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hydra_compose():
    GlobalHydra.instance().clear()
    with initialize_config_module("genexp.configs", version_base="1.3"):
        yield lambda *overrides: compose("train", overrides=list(overrides))
    GlobalHydra.instance().clear()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp(*, batchnorm: bool = False, dropout: float = 0.0, dtype=F64, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP((1, 4, 4), 5, widths=(12,), batchnorm=batchnorm, dropout=dropout).to(dtype).train()


def image_batch(*, b: int = 6, bu: int = 7, dtype=F64, seed: int = 1, step: int = 0) -> Batch:
    g = gen(seed)
    return Batch(x_l=torch.rand(b, 1, 4, 4, generator=g, dtype=dtype), y_l=torch.randint(0, 5, (b,), generator=g),
                 x_u=torch.rand(bu, 1, 4, 4, generator=g, dtype=dtype), step=step, generator=gen(seed + 100))


class TinyText(GenexpModel):
    """Token ids → nn.Embedding → masked mean pooling → linear: the smallest text model."""

    def __init__(self, vocab: int = 11, dim: int = 4, classes: int = 3, dtype=F64, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.tok = nn.Embedding(vocab, dim, padding_idx=0).to(dtype)
        self.out = nn.Linear(dim, classes).to(dtype)

    def embed(self, x: Tensor) -> Tensor:
        return self.tok(x)

    def head(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        m = torch.ones(h.shape[:2], dtype=h.dtype) if mask is None else mask.to(h.dtype)
        pooled = (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
        return self.out(torch.tanh(pooled))

    def embedding_layer(self) -> nn.Embedding:
        return self.tok


def text_batch(*, b: int = 4, bu: int = 5, length: int = 6, vocab: int = 8, seed: int = 2) -> Batch:
    """Ids from 1..vocab-1 (0 = padding), with ragged lengths; tokens ≥ vocab never occur."""
    g = gen(seed)

    def ids(n: int) -> tuple[Tensor, Tensor]:
        x = torch.randint(1, vocab, (n, length), generator=g)
        lengths = torch.randint(2, length + 1, (n,), generator=g)
        mask = (torch.arange(length) < lengths[:, None]).long()
        return x * mask, mask

    x_l, m_l = ids(b)
    x_u, m_u = ids(bu)
    return Batch(x_l=x_l, y_l=torch.randint(0, 3, (b,), generator=g), mask_l=m_l, x_u=x_u, mask_u=m_u,
                 generator=gen(seed + 100))


def setup(method: Method, model: GenexpModel) -> Method:
    method.setup(model, num_classes=5, num_train=100, device=torch.device("cpu"))
    return method


def ce(model: GenexpModel, batch: Batch) -> Tensor:
    return F.cross_entropy(model(batch.x_l, batch.mask_l), batch.y_l)


# ---------------------------------------------------------------- every config trains ---------

@pytest.mark.parametrize("name", TRAINABLE_ON_DIGITS)
def test_every_method_config_trains_on_digits(name, hydra_compose, tmp_path, monkeypatch):
    cfg = hydra_compose(f"method={name}", "steps=5", "eval_every=5", "progress=false", "labels=30",
                        "batch_size=16", "unlabeled_batch_size=32", "device=cpu", "model.widths=[32]")
    initial = {}
    from genexp.train import setup as run_setup

    build_model = run_setup.build_model

    def recording_build_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        initial.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(run_setup, "build_model", recording_build_model)
    result = trainer.train(cfg, tmp_path)
    assert result["status"] == "completed" and result["method"] == name
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert torch.isfinite(torch.tensor(metrics[-1]["train_loss"]))
    final = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    changed = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, final[k])]
    assert len(changed) == sum(v.is_floating_point() for v in initial.values())  # every weight and bias moved


def test_every_config_documents_its_keys():
    for name in ALL_METHODS:
        text = (CONFIG_DIR / f"{name}.yaml").read_text()
        assert f"name: {name}" in text and text.startswith("#")
        if name == "none":
            continue
        keys = [ln for ln in text.splitlines() if ln and ln[0].isalpha() and not ln.startswith(("name:", "defaults:"))]
        assert keys and all("#" in ln for ln in keys), f"{name}.yaml: a key without a comment"


def test_vat_entmin_is_vat_with_entropy(hydra_compose):
    vat = hydra_compose("method=vat").method
    ent = hydra_compose("method=vat_entmin").method
    assert ent.name == "vat_entmin" and ent.entmin_weight == 1.0 and ent._target_ == "genexp.methods.vat.VAT"
    assert {k: v for k, v in ent.items() if k not in ("name", "entmin_weight")} == \
        {k: v for k, v in vat.items() if k not in ("name", "entmin_weight")}
    assert isinstance(build_method(hydra_compose("method=vat_entmin")), VAT)


def test_text_only_method_refuses_digits(hydra_compose, tmp_path):
    cfg = hydra_compose("method=vat_embedding_matrix", "steps=2", "eval_every=2", "progress=false", "device=cpu")
    with pytest.raises(GenexpError, match="text models only"):
        trainer.train(cfg, tmp_path)


@pytest.mark.parametrize("override", ["method=noise method.kind=salt", "method=noise method.samples=0",
                                      "method=noise method.location=hidden method.kind=uniform",
                                      "method=gp_consistency method.estimator=exakt", "method=pgd method.norm=l3",
                                      "method=mean_teacher method.ema_decay=1.5", "method=fgm method.eps=-1",
                                      "method=gp_param method.gradient=fd"])
def test_bad_values_are_genexp_errors(hydra_compose, override):
    with pytest.raises(GenexpError, match="method\\."):
        build_method(hydra_compose(*override.split()))


# ---------------------------------------------------------------- formulas on a fixed batch ---

def test_noise_with_zero_noise_is_plain_ce():
    model, batch = mlp(), image_batch()
    for kwargs in ({"sigma": 0.0, "samples": 3}, {"kind": "bernoulli", "p": 1.0}, {"location": "hidden", "sigma": 0.0},
                   {"location": "weights", "sigma": 0.0, "samples": 2}):
        out = Noise(**kwargs).loss(model, batch)
        torch.testing.assert_close(out.loss, ce(model, batch), msg=str(kwargs))
        assert out.logits_l.shape == (6, 5)


def test_noise_is_ce_on_the_noisy_input():
    model, batch = mlp(), image_batch()
    out = Noise(sigma=0.5, samples=2, label_smoothing=0.1).loss(model, batch)
    eps = torch.randn((12, 1, 4, 4), generator=image_batch().generator, dtype=F64) * 0.5
    expected = F.cross_entropy(model(batch.x_l.repeat(2, 1, 1, 1) + eps), batch.y_l.repeat(2), label_smoothing=0.1)
    torch.testing.assert_close(out.loss, expected)


def test_weight_noise_gradient_is_taken_at_the_noisy_weights():
    model, batch = mlp(), image_batch()
    before = copy.deepcopy(model.state_dict())
    out = Noise(location="weights", sigma=0.1, samples=2).loss(model, batch)
    model.zero_grad()
    out.loss.backward()  # after the noise block, as the trainer does
    got = [p.grad.clone() for p in model.parameters()]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # θ restored exactly
    g, ref = image_batch().generator, mlp()
    expected, value = [torch.zeros_like(p) for p in ref.parameters()], 0.0
    for _ in range(2):
        noisy = copy.deepcopy(ref)
        with torch.no_grad():
            for p in noisy.parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype), alpha=0.1)
        loss = ce(noisy, batch)
        value += loss.item() / 2
        for e, gr in zip(expected, torch.autograd.grad(loss, list(noisy.parameters()))):
            e += gr / 2
    assert out.loss.item() == pytest.approx(value)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_hidden_noise_needs_activation_modules():
    with pytest.raises(GenexpError, match="location=hidden"):
        Noise(location="hidden").loss(TinyText(), text_batch())


def test_noise_consistency_formula():
    model, batch = mlp(), image_batch()
    torch.testing.assert_close(NoiseConsistency(sigma=0.0, weight=3.0).loss(model, batch).loss, ce(model, batch))
    batch = image_batch()
    out = NoiseConsistency(sigma=0.2, weight=3.0, consistency="kl").loss(model, batch)
    eps = torch.randn(batch.x_u.shape, generator=image_batch().generator, dtype=F64) * 0.2
    reg = kl_from_logits(model(batch.x_u).detach(), model(batch.x_u + eps))
    torch.testing.assert_close(out.loss, ce(model, batch) + 3.0 * reg)


@pytest.mark.parametrize("weighting,factor", [("mse", 1.0), ("kl", 0.5)])
def test_noise_consistency_tracks_its_implied_penalty(weighting, factor):
    model, batch = mlp(), image_batch()
    method = NoiseConsistency(sigma=1e-3, samples=2000, consistency=weighting, track_gp=True)
    logs = method.loss(model, batch).logs
    implied = factor * 1e-6 * _jacobian_penalty(model, batch.x_u, weighting)
    torch.testing.assert_close(logs["implied"], implied)
    # Small σ, many draws: the Monte-Carlo noise term is the penalty (MATH.md §2), within sampling error.
    assert abs(logs["consistency"] / logs["implied"] - 1) < 0.1
    assert "implied" not in NoiseConsistency(sigma=1e-3).loss(model, batch).logs


def _jacobian_penalty(model: GenexpModel, x: Tensor, weighting: str) -> Tensor:
    total = 0.0
    for xi in x:
        p = F.softmax(model(xi[None]), -1)[0].detach()
        jac = torch.autograd.functional.jacobian(lambda z: F.softmax(model(z[None]), -1)[0], xi)
        w = torch.ones_like(p) if weighting == "mse" else 1 / p
        total = total + (w * jac.flatten(1).pow(2).sum(1)).sum()
    return total / len(x)


@pytest.mark.parametrize("weighting", ["mse", "kl"])
def test_gp_consistency_exact_formula(weighting):
    model, batch = mlp(), image_batch()
    out = GPConsistency(weighting=weighting, weight=2.0).loss(model, batch)
    torch.testing.assert_close(out.loss, ce(model, batch) + 2.0 * _jacobian_penalty(model, batch.x_u, weighting))


def test_gp_consistency_exact_refuses_train_mode_batchnorm():
    model, batch = mlp(batchnorm=True), image_batch()
    with pytest.raises(GenexpError, match="estimator=rademacher"):
        GPConsistency(estimator="exact").loss(model, batch)
    assert torch.isfinite(GPConsistency(estimator="rademacher", samples=2).loss(model, batch).loss)
    model.eval()
    assert torch.isfinite(GPConsistency(estimator="exact").loss(model, batch).loss)


def test_gp_input_formula():
    model, batch = mlp(), image_batch()
    out = GPInput(weight=0.5).loss(model, batch)
    pen = 0.0
    for xi, yi in zip(batch.x_l, batch.y_l):
        xi = xi[None].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xi), yi[None]), [xi])
        pen += g.pow(2).sum() / len(batch.y_l)
    torch.testing.assert_close(out.loss, ce(model, batch) + 0.5 * pen)


def test_gp_param_formula_and_finite_difference_gradient():
    model, batch = mlp(dropout=0.3), image_batch()
    torch.manual_seed(5)
    sup = ce(model, batch)
    grads = torch.autograd.grad(sup, list(model.parameters()))
    torch.manual_seed(5)
    exact = GPParam(weight=0.3).loss(model, batch)
    torch.testing.assert_close(exact.loss, sup + 0.3 * sum(g.pow(2).sum() for g in grads))
    model.zero_grad()
    exact.loss.backward()
    want = [p.grad.clone() for p in model.parameters()]
    torch.manual_seed(5)  # same dropout masks; the finite-difference pass must replay them too
    fd = GPParam(weight=0.3, gradient="finite_difference", fd_step=1e-5).loss(model, batch)
    torch.testing.assert_close(fd.loss, exact.loss)
    model.zero_grad()
    fd.loss.backward()
    for a, b in zip((p.grad for p in model.parameters()), want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls,kwargs", [(FGM, {}), (PGD, {"steps": 2, "alpha": 0.3})])
def test_adversarial_with_zero_eps_is_one_plus_weight_ce(cls, kwargs):
    model, batch = mlp(), image_batch()
    out = cls(eps=0.0, weight=0.7, **kwargs).loss(model, batch)
    torch.testing.assert_close(out.loss, 1.7 * ce(model, batch))


def test_fgm_formula():
    model, batch = mlp(), image_batch()
    out = FGM(eps=0.3, weight=0.5).loss(model, batch)
    x = batch.x_l.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), batch.y_l, reduction="sum"), [x])
    r = 0.3 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(out.loss, ce(model, batch) + 0.5 * F.cross_entropy(model(batch.x_l + r), batch.y_l))


def test_pseudo_label_formula():
    model, batch = mlp(), image_batch(step=50)
    # Threshold above 1: nothing is confident, the loss is the supervised CE exactly.
    torch.testing.assert_close(PseudoLabel(threshold=1.01).loss(model, batch).loss, ce(model, batch))
    logits_u = model(batch.x_u)
    probs = F.softmax(logits_u, -1)
    conf = probs.max(-1).values
    thr = conf.median().item()
    keep = (conf >= thr).double()
    per = F.cross_entropy(logits_u, probs.argmax(-1), reduction="none")
    out = PseudoLabel(threshold=thr, weight=2.0, rampup_steps=200).loss(model, batch)  # ramp: 50/200 of the weight
    torch.testing.assert_close(out.loss, ce(model, batch) + 2.0 * 0.25 * (per * keep).mean())
    assert out.logs["pl_mask"].item() == pytest.approx(keep.mean().item())


def test_mean_teacher_consistency_ema_and_state():
    model, batch = mlp(), image_batch(step=3)
    mt = setup(MeanTeacher(sigma=0.0, weight=5.0, rampup_steps=0, ema_decay=0.9), model)
    assert mt.eval_model(model) is mt.teacher and not any(p.requires_grad for p in mt.teacher.parameters())
    # The teacher starts as a copy and no noise: the consistency is 0.
    torch.testing.assert_close(mt.loss(model, batch).loss, ce(model, batch))
    old_teacher = [p.detach().clone() for p in mt.teacher.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = mt.loss(model, batch)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    mt.after_step(model, batch)
    d = min(1 - 1 / (3 + 2), 0.9)  # after the step of batch.step = 3, 4 steps are done
    assert mt.decay(3) == pytest.approx(0.8)
    for t, t0, s in zip(mt.teacher.parameters(), old_teacher, model.parameters()):
        assert not torch.equal(t, t0)
        torch.testing.assert_close(t, d * t0 + (1 - d) * s.detach())
    # With noise the formula: squared softmax difference summed over classes, sigmoid ramp-up.
    mt.sigma, mt.rampup_steps = 0.1, 10
    batch = image_batch(step=3)
    out = mt.loss(model, batch)
    g = image_batch().generator
    xs = batch.x_u + 0.1 * torch.randn(batch.x_u.shape, generator=g, dtype=F64)
    xt = batch.x_u + 0.1 * torch.randn(batch.x_u.shape, generator=g, dtype=F64)
    cons = (F.softmax(model(xs), -1) - F.softmax(mt.teacher(xt), -1)).pow(2).sum(-1).mean()
    w = 5.0 * torch.exp(torch.tensor(-5.0 * (1 - 0.3) ** 2)).item()
    torch.testing.assert_close(out.loss, ce(model, batch) + w * cons)
    # State survives a checkpoint, also when loaded before setup (resume order).
    state = copy.deepcopy(mt.state_dict())
    fresh = MeanTeacher()
    fresh.load_state_dict(state)
    setup(fresh, mlp(seed=9))
    for k, v in state["teacher"].items():
        assert torch.equal(fresh.teacher.state_dict()[k], v)
    assert MeanTeacher(eval_teacher=False).eval_model(model) is None


UNLABELLED_BN_METHODS = [
    NoiseConsistency(), GPConsistency(estimator="rademacher"), PseudoLabel(threshold=0.0), MeanTeacher(),
    FGM(), PGD(), GPInput(), VAT(),
]


@pytest.mark.parametrize("method", UNLABELLED_BN_METHODS, ids=lambda m: type(m).__name__)
def test_only_the_supervised_pass_moves_batchnorm(method):
    model, batch = mlp(batchnorm=True), image_batch()
    setup(method, model)
    reference = copy.deepcopy(model)
    method.loss(model, batch)
    reference(batch.x_l)
    for (k, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


@pytest.mark.parametrize("method", [*UNLABELLED_BN_METHODS, GPParam(gradient="finite_difference")],
                         ids=lambda m: type(m).__name__)
def test_one_batchnorm_freeze_per_step(method, monkeypatch):
    """Method.loss decides BatchNorm freezing once per step: one frozen_bn_stats entry around every
    pass but the supervised one, none inside the regularizer functions."""
    import sys

    from genexp.models import batchnorm

    real, entries = batchnorm.frozen_bn_stats, []

    def counting(*modules):
        entries.append(modules)
        return real(*modules)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("genexp") and getattr(module, "frozen_bn_stats", None) is real:
            monkeypatch.setattr(module, "frozen_bn_stats", counting)
    model, batch = mlp(batchnorm=True), image_batch()
    setup(method, model)
    method.loss(model, batch).loss.backward()
    assert len(entries) == 1 and entries[0][0] is model


@pytest.mark.parametrize("kind", ["mlp", "mlp_bn", "text"])
def test_vat_loss_and_gradients_match_the_formula(kind):
    """CE(x_l) + α·KL(p(x_u) ‖ p(x_u + r_adv)), r_adv from the same draw; unmasked BN-free models share
    one forward for the labelled and adversarial batch (`fusable`), which must not change any gradient."""
    from genexp.methods.vat import fusable
    from genexp.regularizers.vat import vat_perturbation

    model, batch = (TinyText(), text_batch()) if kind == "text" else (mlp(batchnorm=kind == "mlp_bn"), image_batch())
    method = setup(VAT(eps=0.8, xi=1e-3, weight=1.7), model)
    reference = copy.deepcopy(model)
    out = method.loss(model, batch)
    out.loss.backward()
    assert fusable(model, batch) == (kind == "mlp")

    h = reference.embed(batch.x_u)

    def head(z: Tensor) -> Tensor:
        return reference.head(z, batch.mask_u)

    with torch.no_grad():
        target = head(h)
    r = vat_perturbation(head, h, xi=1e-3, eps=0.8, generator=gen(batch_seed(kind) + 100), target_logits=target,
                         mask=reference.perturb_mask(batch.mask_u), model=reference)
    expected = ce(reference, batch) + 1.7 * kl_from_logits(target, head(h + r))
    expected.backward()
    torch.testing.assert_close(out.loss, expected)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def batch_seed(kind: str) -> int:
    return 2 if kind == "text" else 1


# ---------------------------------------------------------------- text models -----------------

TEXT_METHODS = [Noise(), Noise(kind="bernoulli", samples=2), Noise(location="weights"), NoiseConsistency(samples=2),
                GPConsistency(estimator="rademacher"), GPInput(), GPParam(), FGM(), PGD(), PseudoLabel(threshold=0.0),
                MeanTeacher(include_labeled=True), VAT(), VATEmbeddingMatrix()]


@pytest.mark.parametrize("method", TEXT_METHODS, ids=lambda m: type(m).__name__)
def test_every_method_runs_on_a_text_model(method):
    model, batch = TinyText(), text_batch()
    setup(method, model)
    out = method.loss(model, batch)
    assert torch.isfinite(out.loss) and out.logits_l.shape == (4, 3)
    model.zero_grad()
    out.loss.backward()
    assert model.tok.weight.grad is not None and torch.isfinite(model.tok.weight.grad).all()


def test_gp_consistency_exact_refuses_padded_text():
    with pytest.raises(GenexpError, match="estimator=rademacher"):
        GPConsistency(estimator="exact").loss(TinyText(), text_batch())


def test_vat_embedding_matrix_perturbation_and_loss():
    model, batch = TinyText(), text_batch()
    method = setup(VATEmbeddingMatrix(eps=0.7, xi=1e-4, weight=2.0), model)
    torch.testing.assert_close(setup(VATEmbeddingMatrix(eps=0.0), model).loss(model, batch).loss, ce(model, batch))
    target = model(batch.x_u, batch.mask_u).detach()
    r = method.perturbation(model, batch.x_u, batch.mask_u, target, gen(3))
    assert model.tok.weight.grad is None  # the power iteration touches no parameter gradient
    assert r.shape == model.tok.weight.shape and r.norm().item() == pytest.approx(0.7)  # one norm, whole matrix
    unused = torch.ones(11, dtype=torch.bool)
    unused[batch.x_u[batch.mask_u.bool()].unique()] = False
    assert unused.any() and (r[unused] == 0).all()  # rows of tokens not in the batch stay put
    # The loss is KL(p(x; W) ‖ p(x; W + r)) with the embeddings computed as F.embedding(ids, W + r).
    batch.generator = gen(3)
    out = method.loss(model, batch)
    adv = model.head(F.embedding(batch.x_u, model.tok.weight + r), batch.mask_u)
    torch.testing.assert_close(out.loss, ce(model, batch) + 2.0 * kl_from_logits(target, adv))


def test_vat_embedding_matrix_finds_the_dominant_eigenvector():
    model, batch = TinyText(vocab=6, dim=3), text_batch(vocab=6)
    x, mask = batch.x_u, batch.mask_u
    target = model(x, mask).detach()
    w0 = model.tok.weight.detach()

    def kl_of(delta: Tensor) -> Tensor:
        logits = model.head(F.embedding(x, w0 + delta.view_as(w0)), mask)
        return kl_from_logits(target, logits, reduction="sum")

    hess = torch.autograd.functional.hessian(kl_of, torch.zeros(w0.numel(), dtype=F64))
    vals, vecs = torch.linalg.eigh(hess)
    top = vecs[:, -1]
    method = VATEmbeddingMatrix(eps=1.0, xi=1e-5, power_iters=40)
    r = method.perturbation(model, x, mask, target, gen(0)).flatten()
    assert abs(torch.dot(r, top).item()) == pytest.approx(1.0, abs=1e-4)


def test_vat_embedding_matrix_needs_an_embedding_layer():
    with pytest.raises(GenexpError, match="method=vat"):
        setup(VATEmbeddingMatrix(), mlp())


# ---------------------------------------------------------------- plugin ----------------------

def test_adding_a_method_needs_no_edit_to_the_trainer(tmp_path):
    (tmp_path / "mymod.py").write_text(textwrap.dedent("""
        import torch
        from genexp.methods import Method, StepOutput

        class Tiny(Method):
            \"\"\"CE + weight·mean squared logit.\"\"\"
            def __init__(self, weight: float = 0.01):
                super().__init__(weight=weight)

            def loss(self, model, batch):
                sup, logits = self.supervised(model, batch)
                reg = logits.float().pow(2).mean()
                return StepOutput(loss=sup + self.weight * reg, logits_l=logits, logs={"logit_sq": reg.detach()})
    """))
    (tmp_path / "cfg" / "method").mkdir(parents=True)
    (tmp_path / "cfg" / "method" / "tiny.yaml").write_text(
        "_target_: mymod.Tiny\nname: tiny\nweight: 0.01   # weight of the mean squared logit\n")
    run = tmp_path / "run"
    p = genexp("train", f"hydra.searchpath=[file://{tmp_path / 'cfg'}]", "method=tiny", "method.weight=0.02",
               "steps=5", "eval_every=5", "progress=false", "labels=30", f"hydra.run.dir={run}", cwd=tmp_path,
               env={"PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["method"] == "tiny" and result["status"] == "completed"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "train_logit_sq" in metrics[-1]


def test_track_gp_refuses_batchnorm_before_training():
    with pytest.raises(GenexpError, match="track_gp"):
        setup(NoiseConsistency(track_gp=True), mlp(batchnorm=True))
