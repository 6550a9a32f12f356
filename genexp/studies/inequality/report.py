"""`genexp inequality`'s tables: LHS/RHS per checkpoint and term, the left side's geometry, and
none vs gp_param on the input-gradient norm."""
from __future__ import annotations

import math
from typing import Any

from genexp.studies.inequality.check import F_KINDS, TOLERANCE


def _fmt(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def _ratio_table(out: dict[str, Any], kind: str) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(title=f"LHS/RHS per example, f = {out['f'][kind]}", box=box.SIMPLE_HEAD,
              caption="W_t,b_t: the per-layer forms (their ratios are equal, both are checked); "
                      "θ: the full inequality. ≤ 1 = holds.")
    for col in ("checkpoint", "term", "min", "median", "max"):
        t.add_column(col, justify="left" if col in ("checkpoint", "term") else "right")
    rows = [c for c in out["checks"] if c["f"] == kind]
    for i, c in enumerate(rows):
        if i:
            t.add_section()
        name = f"{c['model']} @{c['step']}"
        for layer in c["layers"]:
            w = layer["W"]
            t.add_row(name, f"W{layer['t']},b{layer['t']}", _fmt(w["min"]), _fmt(w["median"]), _fmt(w["max"]))
        tot = c["total"]
        t.add_row(name, "[bold]θ[/bold]", *(f"[bold]{_fmt(tot[k])}[/bold]" for k in ("min", "median", "max")))
    return t


def _geometry_table(out: dict[str, Any]) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(title="The left side's geometry (same for both f)", box=box.SIMPLE_HEAD,
              caption="J_t = ∇_x h_t (J_1 = I); medians over the checked examples")
    for col in ("checkpoint", "layer", "‖W_t‖₂²", "median ‖J_t‖₂²", "median ‖h_t‖²"):
        t.add_column(col, justify="left" if col in ("checkpoint", "layer") else "right")
    rows = [c for c in out["checks"] if c["f"] == F_KINDS[0]]
    for i, c in enumerate(rows):
        if i:
            t.add_section()
        for layer in c["layers"]:
            t.add_row(f"{c['model']} @{c['step']}", str(layer["t"]), _fmt(layer["W_spectral_sq"]),
                      _fmt(layer["J_spectral_sq_median"]), _fmt(layer["h_sq_median"]))
    return t


def _comparison_table(out: dict[str, Any]) -> Any:
    from rich import box
    from rich.table import Table

    cfg = out["config"]
    t = Table(title=f"none vs gp_param (CE + λ‖∇_θ CE‖², batch-mean CE), same init and batches, "
                    f"{cfg['train_steps']} steps; f = l, over {out['comparison_n_test']} test digits",
              box=box.SIMPLE_HEAD,
              caption="bound = ‖∇_θ l‖² / Σ_t (1+‖h_t‖²)/(‖W_t‖₂²‖J_t‖₂²), the inequality's cap on ‖∇_x l‖² "
                      "(per example, then averaged)")
    for col in ("method", "test acc", "mean ‖∇_x l‖²", "median ‖∇_x l‖²", "mean ‖∇_θ l‖²", "mean bound"):
        t.add_column(col, justify="left" if col == "method" else "right", no_wrap=col == "method")
    for m, c in out["comparison"].items():
        t.add_row(m, f"{100 * c['test_acc']:.2f}%", _fmt(c["input_grad_sq_mean"]), _fmt(c["input_grad_sq_median"]),
                  _fmt(c["param_grad_sq_mean"]), _fmt(c["bound_mean"]))
    return t


def print_report(out: dict[str, Any]) -> None:
    from rich.console import Console

    cfg = out["config"]
    console = Console()
    arch = (f"MLP 64→{'→'.join([str(cfg['width'])] * cfg['depth'])}{'→' if cfg['depth'] else ''}10, "
            f"{cfg['activation']}, {cfg['dtype']}")
    console.print(f"[bold]Article 8796 inequality[/bold] on {arch}; {out['n_examples']} test digits per check; "
                  f"training: Adam lr {cfg['lr']}, batch {cfg['batch_size']}, "
                  f"{cfg['labels'] or 'all'} labelled training digits, seed {cfg['seed']}")
    for kind in F_KINDS:
        console.print(_ratio_table(out, kind))
    console.print(_geometry_table(out))
    console.print(_comparison_table(out))
    verdict = ("[green]holds on every example, every layer and both f[/green]" if out["holds"]
               else f"[red]VIOLATED on {out['violations']} example-terms[/red]")
    console.print(f"max LHS/RHS over all checks: {out['max_ratio']:.6g} (tolerance 1 + {TOLERANCE:g}): {verdict}. "
                  f"{out['elapsed_s']:.1f}s")
