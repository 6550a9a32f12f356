"""`genexp inequality`: article 8796's input-vs-parameter gradient inequality, checked exactly.

For an MLP h_{t+1} = g(W_t h_t + b_t), t = 1..l, h_1 = x (the embedded input), the last layer
linear (the logits), and f any scalar of the output, every single example satisfies (MATH.md §5)

    ‖∇_x f‖² · Σ_t (1 + ‖h_t‖²) / (‖W_t‖₂² ‖J_t‖₂²)  ≤  ‖∇_θ f‖²          (total)
    ‖∇_x f‖² · ‖h_t‖² / (‖W_t‖₂² ‖J_t‖₂²)            ≤  ‖∇_{W_t} f‖²      (W_t)
    ‖∇_x f‖² / (‖W_t‖₂² ‖J_t‖₂²)                     ≤  ‖∇_{b_t} f‖²      (b_t)

with J_t = ∇_x h_t (J_1 = I) and ‖·‖₂ the spectral norm. Proof in one line: with
δ_t = ∂f/∂z_t, z_t = W_t h_t + b_t, the chain rule gives ∇_x f = δ_tᵀ W_t J_t, ∇_{b_t} f = δ_t
and ∇_{W_t} f = δ_t h_tᵀ, so ‖∇_x f‖ ≤ ‖δ_t‖ ‖W_t‖₂ ‖J_t‖₂, ‖∇_{W_t} f‖ = ‖δ_t‖ ‖h_t‖; sum over t.

This command computes both sides with exact per-example Jacobians (torch.func), for two choices
of f: the logit of the true class, and the cross-entropy loss l. It reports LHS/RHS (≤ 1 means
the inequality holds) at initialisation and along training on the digits, then trains the same
network from the same initialisation and batches with the parameter gradient penalty gp_param
(CE + λ‖∇_θ CE‖² on the batch-mean CE, one run per λ in --gp-weight) and reports the mean
input-gradient norm ‖∇_x l‖² of every run on the test set, beside ‖∇_θ l‖² and the cap the
inequality puts on ‖∇_x l‖².
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from genexp.errors import GenexpError
from genexp.models.mlp import ACTIVATIONS
from genexp.studies.inequality.check import (
    F_KINDS,
    TOLERANCE,
    Geometry,
    Sides,
    activation_of,
    check,
    forward_all,
    geometry,
    jacobians,
    linear_layers,
    mlp_params,
    ratio,
    sides,
    spectral_sq,
    summarise,
)
from genexp.studies.inequality.experiment import Config, checkpoint_steps, run
from genexp.studies.inequality.report import print_report

# Re-exported: the tests import these from genexp.inequality.
__all__ = ["F_KINDS", "TOLERANCE", "Config", "Geometry", "Sides", "activation_of", "check", "checkpoint_steps",
           "forward_all", "geometry", "jacobians", "linear_layers", "main", "mlp_params", "print_report", "ratio",
           "run", "sides", "spectral_sq", "summarise"]


def _parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(prog="genexp inequality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=d.depth,
                   help=f"hidden layers (l = depth + 1 linear layers; default {d.depth})")
    p.add_argument("--width", type=int, default=d.width, help=f"hidden width (default {d.width})")
    p.add_argument("--activation", default=d.activation, help=f"{' | '.join(ACTIVATIONS)} (default {d.activation})")
    p.add_argument("--samples", type=int, default=d.samples, help=f"test examples checked (default {d.samples})")
    p.add_argument("--train-steps", type=int, default=d.train_steps, help=f"Adam steps (default {d.train_steps})")
    p.add_argument("--checkpoints", type=int, default=d.checkpoints,
                   help=f"checks after initialisation, log-spaced up to --train-steps (default {d.checkpoints})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--labels", type=int, default=d.labels,
                   help="train on this many labelled digits (default 0: the whole training split)")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--gp-weight", default=",".join(f"{w:g}" for w in d.gp_weights),
                   help="comma list of λ for gp_param, CE + λ‖∇_θ CE‖²: one run each (default "
                        f"{','.join(f'{w:g}' for w in d.gp_weights)}; configs/method/gp_param.yaml uses 0.01)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"init and batch order (default {d.seed})")
    p.add_argument("--dtype", choices=("float64", "float32"), default=d.dtype, help="default float64")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: these ops are tiny, and extra threads mostly contend; "
                        "0 = torch's choice)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    return p


def _config(args: argparse.Namespace) -> Config:
    try:
        weights = tuple(float(w) for w in args.gp_weight.split(",") if w.strip())
    except ValueError:
        raise GenexpError(f"--gp-weight {args.gp_weight!r}: expected a comma list of numbers, "
                          "e.g. 0.01,0.1") from None
    return Config(**{k: v for k, v in vars(args).items() if k not in ("json", "threads", "gp_weight")},
                  gp_weights=weights)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        out = run(_config(args))
    except GenexpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_report(out)
    if not out["holds"]:
        print(f"error: the inequality failed on {out['violations']} example-terms (max LHS/RHS "
              f"{out['max_ratio']:.6g}): that is a bug in the check, since it holds exactly", file=sys.stderr)
        return 1
    return 0
