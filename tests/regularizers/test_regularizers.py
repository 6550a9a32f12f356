"""Numerical checks of genexp.regularizers against exact or manual computations (CPU, seconds)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genexp.regularizers import (
    add_noise,
    adversarial_loss,
    consistency_gradient_penalty,
    entropy_loss,
    fgm_perturbation,
    hidden_noise,
    input_gradient_penalty,
    noise_consistency_loss,
    noisy_ce,
    param_gradient_penalty,
    pgd_perturbation,
    smooth_labels,
    vat_loss,
    vat_perturbation,
    weight_noise,
)
from genexp.regularizers.divergence import kl_from_logits
from genexp.regularizers.norms import per_sample_norm

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(d_in: int = 6, hidden: int = 16, classes: int = 4, *, seed: int = 0, dtype=F64) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes)).to(dtype)


def bn_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).train()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def data(b: int = 5, d: int = 6, classes: int = 4, *, seed: int = 1, dtype=F64):
    g = gen(seed)
    x = torch.randn(b, d, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (b,), generator=g)
    return x, y


class MeanPool(nn.Module):
    """(B, L, D) → logits; padded positions contribute through the mean, as a real text model would."""

    def __init__(self, d: int = 4, classes: int = 3):
        super().__init__()
        self.lin = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.tanh(x).mean(1))


# --------------------------------------------------------------------------- VAT


def test_vat_direction_is_top_eigenvector_of_kl_hessian():
    model = mlp()
    x, _ = data()
    r = vat_perturbation(model, x, xi=1e-4, eps=1.0, power_iters=30, generator=gen(2))
    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        with torch.no_grad():
            target = model(xb)
        # D(r) = KL(p(x) ‖ p(x + r)) for this single sample, Hessian at r = 0.
        H = torch.autograd.functional.hessian(
            lambda rr: kl_from_logits(target, model(xb + rr.unsqueeze(0)), reduction="sum"),
            torch.zeros(x.shape[1], dtype=F64))
        evals, evecs = torch.linalg.eigh(H)
        assert evals[-2] < 0.9 * evals[-1], "no spectral gap: the test would be meaningless"
        cos = torch.dot(r[b], evecs[:, -1]).abs() / r[b].norm()
        assert cos >= 0.99, (b, cos.item())


@pytest.mark.parametrize("power_iters", [0, 1, 3])
def test_vat_per_sample_norm_is_eps(power_iters):
    model = mlp(dtype=torch.float32)
    x, _ = data(b=7, dtype=torch.float32)
    x[0] *= 100.0  # very different scales per sample: a batch-level normalisation would fail
    r = vat_perturbation(model, x, xi=1e-6, eps=2.5, power_iters=power_iters, generator=gen(3))
    assert r.shape == x.shape and r.dtype == x.dtype
    torch.testing.assert_close(per_sample_norm(r).flatten(), torch.full((7,), 2.5), rtol=1e-5, atol=1e-5)


def test_vat_xi_auto_recovers_the_float64_direction_in_float32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    x = torch.rand(64, 64, generator=gen(1)) / 2  # ‖x‖ ≈ 4 per row, as the preprocessed digits
    init = torch.randn(x.shape, generator=gen(2), dtype=F64)
    ref = vat_perturbation(model.double(), x.double(), xi=1e-6, eps=1.0, power_iters=1, init=init)

    def cos(xi):
        r = vat_perturbation(model.float(), x, xi=xi, eps=1.0, power_iters=1, init=init.float())
        return F.cosine_similarity(r.double(), ref).abs()

    good = cos("auto")
    assert good.mean() > 0.995 and good.min() > 0.95, good
    # Miyato's ξ = 1e-6 in float32: ξd is below the resolution of x and the direction is noise.
    assert cos(1e-6).mean() < 0.9


def test_vat_xi_auto_scales_with_each_sample():
    from genexp.regularizers.vat import finite_difference_step
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    step = finite_difference_step("auto", x).flatten()
    torch.testing.assert_close(step, torch.tensor([5.0, 1.0]) * torch.finfo(torch.float32).eps ** 0.5)
    assert finite_difference_step(1e-3, x) == 1e-3


@pytest.mark.parametrize("power_iters", [0, 2])
def test_vat_mask_zeros_padding(power_iters):
    torch.manual_seed(0)
    model = MeanPool()
    x = torch.randn(3, 5, 4)
    mask = torch.ones(3, 5, 1)
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    # xi = 1e-3: in float32 a 1e-6 step leaves these logits bit-identical, the power-iteration
    # gradient is exactly 0 and vat_perturbation then returns r = 0 for that sample.
    r = vat_perturbation(model, x, xi=1e-3, eps=1.5, power_iters=power_iters, mask=mask, generator=gen(4))
    assert torch.all(r[mask.expand_as(r) == 0] == 0)
    assert (r[mask.expand_as(r) == 1] != 0).all()
    torch.testing.assert_close(per_sample_norm(r).flatten(), torch.full((3,), 1.5), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- side effects


def _snapshot(model: nn.Module):
    grads = [p.grad.clone() for p in model.parameters()]
    bufs = {k: v.clone() for k, v in model.named_buffers()}
    return grads, bufs


def _assert_untouched(model: nn.Module, snap) -> None:
    grads, bufs = snap
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)
    for k, v in model.named_buffers():
        assert torch.equal(v, bufs[k]), k


@pytest.mark.parametrize("which", ["vat", "fgm", "pgd_l2", "pgd_linf"])
def test_perturbations_leave_param_grads_and_bn_buffers_alone(which):
    model = bn_mlp()
    for i, p in enumerate(model.parameters()):
        p.grad = torch.full_like(p, 0.25 + i)
    x, y = data(b=8, classes=3, dtype=torch.float32)
    snap = _snapshot(model)
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(snap[1])
    if which == "vat":
        r = vat_perturbation(model, x, xi=1e-6, eps=1.0, power_iters=2, generator=gen(5))
    elif which == "fgm":
        r = fgm_perturbation(model, x, y, eps=1.0)
    else:
        norm = which.split("_")[1]
        r = pgd_perturbation(model, x, y, eps=0.5, alpha=0.2, steps=3, norm=norm, generator=gen(5))
    assert not r.requires_grad and torch.isfinite(r).all()
    assert model.training
    _assert_untouched(model, snap)
    # The check can fail: a plain training forward does move the buffers.
    model(x)
    assert not torch.equal(model[1].running_mean, snap[1]["1.running_mean"])


def test_consistency_losses_leave_bn_buffers_alone():
    model = bn_mlp()
    x, _ = data(b=8, classes=3, dtype=torch.float32)
    bufs = {k: v.clone() for k, v in model.named_buffers()}
    vat_loss(model, x, xi=1e-6, eps=1.0, generator=gen(6)).backward()
    noise_consistency_loss(model, x, sigma=0.1, samples=2, generator=gen(6)).backward()
    for k, v in model.named_buffers():
        assert torch.equal(v, bufs[k]), k


# --------------------------------------------------------------------------- FGM / PGD


def test_fgm_is_eps_times_normalised_per_sample_ce_gradient():
    model = mlp()
    x, y = data()
    eps = 0.7
    r = fgm_perturbation(model, x, y, eps=eps)
    for b in range(x.shape[0]):
        xb = x[b:b + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xb), y[b:b + 1]), [xb])
        torch.testing.assert_close(r[b], (eps * g / g.norm())[0], rtol=1e-10, atol=1e-12)


def test_fgm_respects_mask():
    torch.manual_seed(0)
    model = MeanPool()
    x = torch.randn(2, 5, 4)
    y = torch.tensor([0, 2])
    mask = torch.ones(2, 5, 1)
    mask[1, 2:] = 0
    r = fgm_perturbation(model, x, y, eps=1.0, mask=mask)
    assert torch.all(r[1, 2:] == 0)
    torch.testing.assert_close(per_sample_norm(r).flatten(), torch.ones(2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm,eps,alpha", [("l2", 0.5, 0.2), ("linf", 0.1, 0.03)])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_ball_and_increases_loss(norm, eps, alpha, random_start):
    model = mlp()
    x, y = data(b=16)
    r = pgd_perturbation(model, x, y, eps=eps, alpha=alpha, steps=10, norm=norm, generator=gen(7),
                         random_start=random_start)
    if norm == "l2":
        assert (per_sample_norm(r) <= eps * (1 + 1e-9)).all()
        # 10 steps of 0.2 reach the boundary: projection is actually exercised.
        assert (per_sample_norm(r) >= eps * (1 - 1e-6)).all()
    else:
        assert r.abs().max() <= eps
        assert r.abs().max() == pytest.approx(eps)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
        adv = adversarial_loss(model, x, y, r)
        fgm = adversarial_loss(model, x, y, fgm_perturbation(model, x, y, eps=eps))
    assert adv > clean
    if norm == "l2":
        assert adv >= fgm - 1e-9  # more ascent steps inside the same ball do at least as well here


def test_adversarial_loss_detaches_r():
    model = mlp()
    x, y = data()
    r = torch.zeros_like(x, requires_grad=True)
    loss = adversarial_loss(model, x, y, r)
    loss.backward()
    assert r.grad is None
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))


# --------------------------------------------------------------------------- gradient penalties


def _manual_gp(model, x, weighting):
    total = 0.0
    for b in range(x.shape[0]):
        xb = x[b]
        probs = F.softmax(model(xb.unsqueeze(0)), -1)[0].detach()
        J = torch.autograd.functional.jacobian(lambda v: F.softmax(model(v.unsqueeze(0)), -1)[0], xb,
                                               create_graph=True)
        w = torch.ones_like(probs) if weighting == "mse" else 1.0 / probs
        total = total + (w * J.pow(2).sum(1)).sum()
    return total / x.shape[0]


@pytest.mark.parametrize("weighting", ["mse", "kl"])
def test_exact_gp_matches_manual_jacobian_value_and_theta_gradient(weighting):
    model = mlp()
    x, _ = data(b=3)
    gp = consistency_gradient_penalty(model, x, weighting=weighting, estimator="exact")
    ref = _manual_gp(model, x, weighting)
    torch.testing.assert_close(gp, ref, rtol=1e-10, atol=1e-12)
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(gp, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)
    detached = consistency_gradient_penalty(model, x, weighting=weighting, estimator="exact", create_graph=False)
    assert not detached.requires_grad
    torch.testing.assert_close(detached, gp.detach())


@pytest.mark.parametrize("weighting", ["mse", "kl"])
def test_rademacher_gp_is_unbiased(weighting):
    model = mlp(classes=5)
    x, _ = data(b=32)  # a wide batch averages many draws per backward: SE of the mean ≈ 0.6% here
    exact = consistency_gradient_penalty(model, x, weighting=weighting, estimator="exact", create_graph=False)
    est = consistency_gradient_penalty(model, x, weighting=weighting, estimator="rademacher", samples=500,
                                       generator=gen(8), create_graph=False)
    assert est.item() == pytest.approx(exact.item(), rel=0.03)
    # A single draw is noisy but trainable.
    one = consistency_gradient_penalty(model, x, weighting=weighting, estimator="rademacher", generator=gen(9))
    one.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_exact_gp_rejects_training_batchnorm():
    model = bn_mlp()
    x, _ = data(b=4, dtype=torch.float32)
    with pytest.raises(ValueError, match="BatchNorm"):
        consistency_gradient_penalty(model, x, estimator="exact")
    model.eval()
    assert torch.isfinite(consistency_gradient_penalty(model, x, estimator="exact"))


def test_input_gradient_penalty_is_per_sample():
    model = mlp()
    x, y = data()
    gp = input_gradient_penalty(model, x, y)
    ref = 0.0
    for b in range(x.shape[0]):
        xb = x[b:b + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xb), y[b:b + 1]), [xb])
        ref += g.pow(2).sum() / x.shape[0]
    torch.testing.assert_close(gp, ref, rtol=1e-10, atol=1e-14)
    gp.backward()
    assert model[0].weight.grad is not None


@pytest.mark.parametrize("h,tol", [(1e-5, 1e-4), (1e-3, 1e-2)])
def test_param_gp_finite_difference_matches_double_backward(h, tol):
    model = mlp(d_in=4, hidden=8, classes=3)
    x, y = data(b=6, d=4, classes=3)
    params = list(model.parameters())

    def closure():
        return F.cross_entropy(model(x), y)

    loss = closure()
    db = param_gradient_penalty(loss, params)
    g_db = torch.autograd.grad(db, params)

    before = [p.detach().clone() for p in params]
    loss2 = closure()
    fd = param_gradient_penalty(loss2, params, method="finite_difference", closure=closure, h=h)
    assert all(torch.equal(p, b) for p, b in zip(params, before)), "parameters not restored exactly"
    torch.testing.assert_close(fd, db.detach(), rtol=1e-12, atol=0)
    g_fd = torch.autograd.grad(fd, params)
    v_db, v_fd = torch.cat([g.flatten() for g in g_db]), torch.cat([g.flatten() for g in g_fd])
    assert ((v_fd - v_db).norm() / v_db.norm()).item() < tol
    # The caller can still backpropagate the main loss through its original graph.
    loss2.backward()
    for p, g in zip(params, torch.autograd.grad(closure(), params)):
        torch.testing.assert_close(p.grad, g)


# --------------------------------------------------------------------------- noise ⇔ penalty


def test_noise_consistency_matches_gradient_penalty_small_sigma():
    model = mlp(classes=5)
    x, _ = data(b=4)
    sigma = 1e-2
    gp_mse = consistency_gradient_penalty(model, x, weighting="mse", create_graph=False)
    gp_kl = consistency_gradient_penalty(model, x, weighting="kl", create_graph=False)
    with torch.no_grad():
        mse = noise_consistency_loss(model, x, sigma=sigma, samples=5000, consistency="mse", generator=gen(10))
        kl = noise_consistency_loss(model, x, sigma=sigma, samples=5000, consistency="kl", generator=gen(10))
    # MATH.md §2: E l(f(x+ε), f(x)) ≈ ½σ² Σ_i λ_i ‖∇f_i‖².
    # MSE, l = ‖F − f‖²: λ_i = 2, so E[mse] ≈ σ² · GP(weighting="mse")   (GP uses w_i = 1, not 2).
    # KL(f ‖ F):          λ_i = 1/f_i, so E[kl] ≈ ½σ² · GP(weighting="kl")  (GP uses w_i = 1/f_i).
    assert mse.item() == pytest.approx(sigma**2 * gp_mse.item(), rel=0.05)
    assert kl.item() == pytest.approx(0.5 * sigma**2 * gp_kl.item(), rel=0.05)


def test_noise_consistency_kl_target_is_detached():
    model = mlp()
    x, _ = data()
    target = model(x)  # has a graph; must not receive gradient
    loss = noise_consistency_loss(model, x, sigma=0.1, consistency="kl", target_logits=target, generator=gen(11))
    (g,) = torch.autograd.grad(loss, [target], allow_unused=True)
    assert g is None


# --------------------------------------------------------------------------- noise


def test_add_noise_moments_and_mask():
    x = torch.ones(200_000, dtype=F64)
    g = add_noise(x, kind="gaussian", sigma=0.3, generator=gen(12))
    assert (g - 1).mean().abs() < 0.01 and (g - 1).std().item() == pytest.approx(0.3, rel=0.02)
    b = add_noise(x, kind="bernoulli", p=0.8, generator=gen(12))
    assert set(b.unique().tolist()) == {0.0, 1.25}
    assert (b == 0).to(F64).mean().item() == pytest.approx(0.2, abs=0.01)
    assert b.mean().item() == pytest.approx(1.0, abs=0.01)
    u = add_noise(x, kind="uniform", generator=gen(12))
    assert 0 <= u.min() and u.max() <= 2
    assert u.mean().item() == pytest.approx(1.0, abs=0.01) and u.var().item() == pytest.approx(1 / 3, rel=0.02)
    mask = torch.zeros(4, 3, 1)
    mask[:, :2] = 1
    for kind in ("gaussian", "bernoulli", "uniform"):
        z = torch.full((4, 3, 2), 5.0)
        out = add_noise(z, kind=kind, sigma=1.0, p=0.5, mask=mask, generator=gen(13))
        assert torch.equal(out[:, 2:], z[:, 2:])
        assert not torch.equal(out[:, :2], z[:, :2])


def test_weight_noise_noisy_gradient_and_exact_restore():
    model = mlp()
    x, y = data()
    before = [p.detach().clone() for p in model.parameters()]
    with weight_noise(model, 0.1, generator=gen(14)):
        noisy = [p.detach().clone() for p in model.parameters()]
        assert all(not torch.equal(a, b) for a, b in zip(noisy, before))
        F.cross_entropy(model(x), y).backward()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    # The gradient is the one at the noisy weights.
    ref = mlp()
    with torch.no_grad():
        for p, v in zip(ref.parameters(), noisy):
            p.copy_(v)
    F.cross_entropy(ref(x), y).backward()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_hidden_noise_hooks_added_and_removed():
    model = mlp()
    x, _ = data()
    with torch.no_grad():
        clean = model(x)
        with hidden_noise(model, 0.5, generator=gen(15)):
            noisy = model(x)
        after = model(x)
    assert not torch.allclose(clean, noisy)
    assert torch.equal(clean, after)
    assert not model[1]._forward_hooks


def test_smooth_labels():
    t = smooth_labels(torch.tensor([0, 2]), 4, 0.2)
    torch.testing.assert_close(t, torch.tensor([[0.85, 0.05, 0.05, 0.05], [0.05, 0.05, 0.85, 0.05]]))
    torch.testing.assert_close(t.sum(-1), torch.ones(2))


def test_noisy_ce_is_mean_over_k_draws():
    model = mlp()
    x, y = data()
    torch.testing.assert_close(noisy_ce(model, x, y, sigma=0.0, samples=3), F.cross_entropy(model(x), y))
    k, sigma = 4, 0.3
    got = noisy_ce(model, x, y, sigma=sigma, samples=k, generator=gen(16))
    eps = torch.randn((k * x.shape[0], x.shape[1]), generator=gen(16), dtype=F64) * sigma
    draws = [F.cross_entropy(model(x + e), y) for e in eps.view(k, *x.shape)]
    torch.testing.assert_close(got, torch.stack(draws).mean())


def test_entropy_loss():
    c = 7
    assert entropy_loss(torch.zeros(3, c)).item() == pytest.approx(math.log(c))
    assert entropy_loss(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
