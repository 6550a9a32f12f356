"""Article 8796's input-vs-parameter gradient inequality, both sides computed exactly per example.

For an MLP h_{t+1} = g(W_t h_t + b_t), t = 1..l, h_1 = x (the embedded input), the last layer
linear (the logits), and f any scalar of the output (the statement and its proof: `genexp
inequality --help`, MATH.md §5), per example

    ‖∇_x f‖² · Σ_t (1 + ‖h_t‖²) / (‖W_t‖₂² ‖J_t‖₂²)  ≤  ‖∇_θ f‖²

with J_t = ∇_x h_t, and the per-layer forms for W_t and b_t. `check` returns LHS/RHS for the
logit of the true class and for the cross-entropy loss (≤ 1 means the inequality holds).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.errors import GenexpError
from genexp.models.mlp import ACTIVATIONS

F_KINDS = ("logit", "loss")
TOLERANCE = 1e-5  # ratios above 1 + TOLERANCE count as violations (float64 round-off is ~1e-15)

Params = tuple[tuple[Tensor, Tensor], ...]

def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of a plain MLP (no BatchNorm, no Dropout), in order."""
    bad = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))]
    if bad:
        raise GenexpError("the inequality is stated for plain MLPs: build the MLP without batchnorm and dropout")
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def mlp_params(model: nn.Module) -> Params:
    return tuple((m.weight.detach(), m.bias.detach()) for m in linear_layers(model))


def activation_of(model: nn.Module) -> Callable[[Tensor], Tensor]:
    acts = [m for m in model.modules() if isinstance(m, tuple(ACTIVATIONS.values()))]
    if not acts:
        return lambda z: z
    return acts[0]


def forward_all(params: Params, act: Callable[[Tensor], Tensor], x: Tensor) -> list[Tensor]:
    """[h_1 = x, h_2, ..., h_{l+1} = logits]; the last layer has no activation."""
    hs = [x]
    for i, (w, b) in enumerate(params):
        z = F.linear(hs[-1], w, b)
        hs.append(act(z) if i < len(params) - 1 else z)
    return hs


def _scalar_f(kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    # gather, not out[y]: indexing by a tensor is data-dependent control flow under vmap.
    if kind == "logit":
        return lambda out, y: out.gather(-1, y.reshape(1)).squeeze(-1)
    if kind == "loss":
        return lambda out, y: -torch.log_softmax(out, dim=-1).gather(-1, y.reshape(1)).squeeze(-1)
    raise ValueError(f"f must be one of {F_KINDS}, got {kind!r}")


@dataclass
class Sides:
    """Per-example sides of the inequality, each of shape (B,) (per layer: (l, B))."""

    gx2: Tensor  # ‖∇_x f‖²
    lhs_w: Tensor  # (l, B)
    rhs_w: Tensor  # (l, B) ‖∇_{W_t} f‖²
    lhs_b: Tensor
    rhs_b: Tensor
    h2: Tensor  # (l, B) ‖h_t‖²
    j2: Tensor  # (l, B) ‖J_t‖₂²
    w2: Tensor  # (l,) ‖W_t‖₂²

    @property
    def lhs(self) -> Tensor:
        return self.lhs_w.sum(0) + self.lhs_b.sum(0)

    @property
    def rhs(self) -> Tensor:
        return self.rhs_w.sum(0) + self.rhs_b.sum(0)

    @property
    def bound(self) -> Tensor:
        """‖∇_θ f‖² / Σ_t (1+‖h_t‖²)/(‖W_t‖²‖J_t‖²): the upper bound the inequality puts on ‖∇_x f‖²."""
        s = ((1 + self.h2) / (self.w2[:, None] * self.j2)).sum(0)
        return self.rhs / s


def ratio(lhs: Tensor, rhs: Tensor) -> Tensor:
    """LHS/RHS with 0/0 = 0 (both sides vanish together, e.g. a dead ReLU layer) and x/0 = inf."""
    safe = torch.where(rhs > 0, rhs, torch.ones_like(rhs))
    return torch.where(rhs > 0, lhs / safe, torch.where(lhs > 0, torch.full_like(lhs, math.inf), torch.zeros_like(lhs)))


@dataclass
class Geometry:
    """What the left side needs besides ∇_x f, shared by every f: (l, B) per layer and example."""

    h2: Tensor  # ‖h_t‖²
    j2: Tensor  # ‖J_t‖₂², J_t = ∇_x h_t
    w2: Tensor  # (l,) ‖W_t‖₂²


def jacobians(params: Params, act: Callable[[Tensor], Tensor], x: Tensor) -> list[Tensor]:
    """Exact per-example Jacobians J_t = ∇_x h_t, t = 2..l, each (B, n_t, d), with torch.func.

    Forward mode (jacfwd: d pushes) when the input is narrower than the widest layer, reverse
    mode (jacrev: n_t pulls) otherwise; both are exact.
    """
    from torch.func import jacfwd, jacrev, vmap

    n_layers = len(params)
    if n_layers < 2:
        return []
    widest = max(w.shape[0] for w, _ in params[:-1])
    jac = jacfwd if x.shape[1] <= widest else jacrev
    with warnings.catch_warnings():
        # torch's forward-AD decompositions call the deprecated torch.jit.script on first use.
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        return list(vmap(jac(lambda xi: tuple(forward_all(params, act, xi)[1:n_layers])))(x))


def spectral_sq(j: Tensor) -> Tensor:
    """‖J‖₂² per matrix of a batch: the top eigenvalue of the smaller Gram matrix (JᵀJ or JJᵀ).

    Equal to torch.linalg.matrix_norm(J, ord=2)² (checked in tests to ~1e-15 relative) and
    ~10× faster on CPU for hundreds of small matrices than a batched SVD.
    """
    gram = j.mT @ j if j.shape[-1] <= j.shape[-2] else j @ j.mT
    return torch.linalg.eigvalsh(gram)[..., -1].clamp_min(0)


def geometry(params: Params, act: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 256) -> Geometry:
    if len(x) > chunk:
        parts = [geometry(params, act, x[i:i + chunk], chunk) for i in range(0, len(x), chunk)]
        return Geometry(h2=torch.cat([g.h2 for g in parts], 1), j2=torch.cat([g.j2 for g in parts], 1), w2=parts[0].w2)
    n_layers = len(params)
    hs = forward_all(params, act, x)[:n_layers]  # inputs h_1..h_l of the l linear layers
    h2 = torch.stack([h.pow(2).sum(1) for h in hs])
    j2 = [torch.ones(len(x), dtype=x.dtype, device=x.device)]  # ‖∇_x h_1‖₂ = ‖I‖₂ = 1
    j2 += [spectral_sq(j) for j in jacobians(params, act, x)]
    w2 = torch.stack([torch.linalg.matrix_norm(w, ord=2).pow(2) for w, _ in params])
    return Geometry(h2=h2, j2=torch.stack(j2), w2=w2)


def sides(params: Params, act: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, kind: str,
          geom: Geometry | None = None) -> Sides:
    """Both sides of every form of the inequality for each example of x (B, d), exactly."""
    if geom is None:
        geom = geometry(params, act, x)
    # Per-example parameter gradients take B × (parameter count) numbers: bound that to ~2e7.
    chunk = max(1, min(256, int(2e7 // sum(w.numel() + b.numel() for w, b in params))))
    parts = [_grads(params, act, x[i:i + chunk], y[i:i + chunk], kind) for i in range(0, len(x), chunk)]
    gx2, rhs_w, rhs_b = (torch.cat([p[k] for p in parts], dim=-1) for k in range(3))
    denom = geom.w2[:, None] * geom.j2
    # ‖∇_x f‖² = 0 makes a term 0 even where J_t = 0 (then ∇_x f = δᵀ W J_t = 0 as well).
    base = torch.where(gx2 > 0, gx2 / denom, torch.zeros_like(denom))
    return Sides(gx2=gx2, lhs_w=base * geom.h2, rhs_w=rhs_w, lhs_b=base, rhs_b=rhs_b, h2=geom.h2, j2=geom.j2,
                 w2=geom.w2)


def _grads(params: Params, act: Callable[[Tensor], Tensor], x: Tensor, y: Tensor,
           kind: str) -> tuple[Tensor, Tensor, Tensor]:
    """Per example: ‖∇_x f‖² (B,), ‖∇_{W_t} f‖² and ‖∇_{b_t} f‖² (l, B)."""
    from torch.func import grad, vmap

    f = _scalar_f(kind)

    def f_of(p: Params, xi: Tensor, yi: Tensor) -> Tensor:
        return f(forward_all(p, act, xi)[-1], yi)

    gx = vmap(grad(f_of, argnums=1), in_dims=(None, 0, 0))(params, x, y)  # (B, d)
    gp = vmap(grad(f_of, argnums=0), in_dims=(None, 0, 0))(params, x, y)  # per example, per layer
    rhs_w = torch.stack([g[0].flatten(1).pow(2).sum(1) for g in gp])
    rhs_b = torch.stack([g[1].flatten(1).pow(2).sum(1) for g in gp])
    return gx.pow(2).sum(1), rhs_w, rhs_b


def _stats(r: Tensor) -> dict[str, float]:
    r = r.double()
    return {"min": r.min().item(), "median": r.median().item(), "max": r.max().item()}


def summarise(s: Sides) -> dict[str, Any]:
    total = ratio(s.lhs, s.rhs)
    layers = []
    for t in range(s.lhs_w.shape[0]):
        rw, rb = ratio(s.lhs_w[t], s.rhs_w[t]), ratio(s.lhs_b[t], s.rhs_b[t])
        layers.append({"t": t + 1, "W": _stats(rw), "b": _stats(rb),
                       "violations": int((rw > 1 + TOLERANCE).sum() + (rb > 1 + TOLERANCE).sum()),
                       "W_spectral_sq": s.w2[t].item(), "J_spectral_sq_median": s.j2[t].median().item(),
                       "h_sq_median": s.h2[t].median().item()})
    worst = max([total.max().item()] + [max(layer["W"]["max"], layer["b"]["max"]) for layer in layers])
    return {"total": _stats(total) | {"lhs_mean": s.lhs.mean().item(), "rhs_mean": s.rhs.mean().item()},
            "layers": layers, "max_ratio": worst,
            "violations": int((total > 1 + TOLERANCE).sum()) + sum(layer["violations"] for layer in layers),
            "input_grad_sq_mean": s.gx2.mean().item(), "param_grad_sq_mean": s.rhs.mean().item(),
            "bound_mean": s.bound.mean().item()}


def check(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, dict[str, Any]]:
    params, act = mlp_params(model), activation_of(model)
    xf = model.embed(x).flatten(1) if hasattr(model, "embed") else x.flatten(1)
    geom = geometry(params, act, xf)
    return {kind: summarise(sides(params, act, xf, y, kind, geom)) for kind in F_KINDS}
