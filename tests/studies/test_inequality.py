"""Article 8796's inequality (MATH.md §5): exact per-example check on random and trained MLPs."""
import json

import pytest
import torch
from torch import nn

from genexp.models.mlp import MLP
from genexp.studies.inequality import command as ineq

BOUND = 1 + 1e-5


def random_mlp(depth, width, activation, d=7, classes=5, seed=0, scale=1.0):
    torch.manual_seed(seed)
    m = MLP((d,), classes, widths=[width] * depth, activation=activation).double()
    with torch.no_grad():  # vary the spectral norms away from the default init
        for i, lin in enumerate(ineq.linear_layers(m)):
            lin.weight.mul_(scale * (0.5 + i))
            lin.bias.normal_(0, 0.5)
    return m


def all_ratios(m, x, y, kind):
    s = ineq.sides(ineq.mlp_params(m), ineq.activation_of(m), x, y, kind)
    return s, [ineq.ratio(s.lhs, s.rhs)] + [ineq.ratio(s.lhs_w[t], s.rhs_w[t]) for t in range(len(s.w2))] + [
        ineq.ratio(s.lhs_b[t], s.rhs_b[t]) for t in range(len(s.w2))]


@pytest.mark.parametrize("depth,width,activation,scale", [
    (0, 1, "tanh", 1.0), (1, 3, "relu", 1.0), (1, 16, "tanh", 3.0), (2, 8, "softplus", 1.0),
    (3, 32, "relu", 2.0), (4, 5, "tanh", 0.3), (2, 24, "gelu", 1.0), (3, 12, "softplus", 4.0),
])
@pytest.mark.parametrize("kind", ineq.F_KINDS)
def test_inequality_holds_on_random_mlps(depth, width, activation, scale, kind):
    m = random_mlp(depth, width, activation, seed=depth * 100 + width, scale=scale)
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(24, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (24,), generator=g)
    s, ratios = all_ratios(m, x, y, kind)
    for r in ratios:
        assert torch.isfinite(r).all() and (r >= 0).all()
        assert r.max().item() <= BOUND, r.max().item()
    assert (s.gx2 > 0).any()  # not vacuous: the left side is non-zero


def test_sides_match_an_independent_autograd_computation():
    """Every ingredient against plain autograd, matrix_norm(ord=2) and an explicit Jacobian, per example."""
    m = random_mlp(2, 9, "tanh", d=6, classes=4, seed=3)
    x = torch.randn(3, 6, dtype=torch.float64)
    y = torch.tensor([0, 3, 1])
    layers = ineq.linear_layers(m)
    s = ineq.sides(ineq.mlp_params(m), ineq.activation_of(m), x, y, "loss")
    for i in range(len(x)):
        xi = x[i:i + 1].clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(m(xi), y[i:i + 1])
        grads = torch.autograd.grad(loss, [xi] + [p for lin in layers for p in (lin.weight, lin.bias)])
        gx2 = grads[0].pow(2).sum()
        assert s.gx2[i].item() == pytest.approx(gx2.item(), rel=1e-12)
        hs = [x[i]]
        for lin in layers[:-1]:
            hs.append(torch.tanh(lin(hs[-1])))
        for t, lin in enumerate(layers):
            gw, gb = grads[1 + 2 * t].pow(2).sum(), grads[2 + 2 * t].pow(2).sum()
            sub = nn.Sequential(*list(m.net)[1:1 + 2 * t])  # x -> h_t
            jac = torch.autograd.functional.jacobian(lambda v: sub(v), x[i]) if t else torch.eye(6, dtype=x.dtype)
            w2 = torch.linalg.matrix_norm(lin.weight.detach(), ord=2) ** 2
            j2 = torch.linalg.matrix_norm(jac, ord=2) ** 2
            lhs_b = gx2 / (w2 * j2)
            assert s.rhs_w[t, i].item() == pytest.approx(gw.item(), rel=1e-12)
            assert s.rhs_b[t, i].item() == pytest.approx(gb.item(), rel=1e-12)
            assert s.lhs_b[t, i].item() == pytest.approx(lhs_b.item(), rel=1e-10)
            assert s.lhs_w[t, i].item() == pytest.approx((lhs_b * hs[t].pow(2).sum()).item(), rel=1e-10)


def test_spectral_sq_equals_matrix_norm():
    g = torch.Generator().manual_seed(0)
    for shape in ((5, 7, 3), (5, 3, 7), (2, 4, 4)):
        j = torch.randn(*shape, generator=g, dtype=torch.float64)
        ref = torch.linalg.matrix_norm(j, ord=2) ** 2
        assert torch.allclose(ineq.spectral_sq(j), ref, rtol=1e-12, atol=0)


def test_functional_forward_is_the_model():
    m = random_mlp(3, 10, "softplus", seed=5)
    x = torch.randn(4, 7, dtype=torch.float64)
    out = ineq.forward_all(ineq.mlp_params(m), ineq.activation_of(m), x)[-1]
    assert torch.allclose(out, m(x), rtol=0, atol=1e-13)


def test_bound_is_attained_so_the_check_is_not_loose():
    """Depth 0, f = logit y, W zero except row y: ∇_x f = W_y, ‖W‖₂ = ‖W_y‖, ‖∇_b f‖ = 1: b-form ratio exactly 1."""
    m = MLP((4,), 3, widths=[]).double()
    with torch.no_grad():
        m.net[1].weight.zero_()
        m.net[1].weight[2] = torch.tensor([1.0, -2.0, 0.5, 3.0])
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.full((5,), 2)
    s, ratios = all_ratios(m, x, y, "logit")
    assert torch.allclose(ineq.ratio(s.lhs_b[0], s.rhs_b[0]), torch.ones(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ineq.ratio(s.lhs, s.rhs), torch.ones(5, dtype=torch.float64), atol=1e-12)
    assert ineq.summarise(s)["violations"] == 0


def test_dead_relu_layer_gives_zero_not_nan():
    m = random_mlp(2, 6, "relu", seed=2)
    with torch.no_grad():
        ineq.linear_layers(m)[0].bias.fill_(-1e3)  # h_2 = 0 for every input: J_2 = 0 and ∇_x f = 0
    x, y = torch.randn(6, 7, dtype=torch.float64), torch.zeros(6, dtype=torch.long)
    s, ratios = all_ratios(m, x, y, "loss")
    assert (s.gx2 == 0).all() and (s.j2[1] == 0).all()
    assert all(torch.equal(r, torch.zeros_like(r)) for r in ratios)


def test_checkpoint_steps():
    assert ineq.checkpoint_steps(1000, 3) == [0, 10, 100, 1000]
    assert ineq.checkpoint_steps(0, 3) == [0]
    assert ineq.checkpoint_steps(2, 3) == [0, 1, 2]


def test_cli_small_run_json(capsys):
    rc = ineq.main(["--train-steps", "30", "--samples", "24", "--width", "16", "--checkpoints", "1",
                    "--gp-weight", "0.5", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out)
    assert res["holds"] and res["violations"] == 0 and 0 < res["max_ratio"] <= BOUND
    assert [(c["model"], c["step"]) for c in res["checks"] if c["f"] == "loss"] == [
        ("none", 0), ("none", 30), ("gp_param λ=0.5", 30)]
    assert {c["f"] for c in res["checks"]} == {"logit", "loss"}
    assert set(res["comparison"]) == {"none", "gp_param λ=0.5"}
    for c in res["comparison"].values():
        assert c["input_grad_sq_mean"] <= c["bound_mean"] * BOUND  # the cap holds per example, so on average
    assert len(res["checks"][0]["layers"]) == 3


def test_cli_rich_output(capsys):
    rc = ineq.main(["--train-steps", "5", "--samples", "8", "--width", "8", "--depth", "1", "--checkpoints", "1",
                    "--activation", "tanh"])
    out = " ".join(capsys.readouterr().out.split())  # undo rich's line wrapping
    assert rc == 0 and "LHS/RHS per example" in out and "holds on every example" in out


@pytest.mark.parametrize("args", [["--activation", "swish"], ["--width", "0"], ["--gp-weight", "x"],
                                  ["--gp-weight", "-1"]])
def test_bad_input_is_one_line_exit_2(capsys, args):
    rc = ineq.main(args)
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ")
