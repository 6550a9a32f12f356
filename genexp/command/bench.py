"""`genexp bench`: what a step of each method costs, against a supervised step and its floor.

Cost model (in forward units per example): a supervised step on l labelled examples
is one forward + backward ≈ 3l. VAT with r power iterations adds, on u unlabelled examples,
the clean forward (u), r forward+backward passes to the input only (2u each: no weight
gradients) and the adversarial forward+backward (3u): floor = (3l + 4u + 2ru) / 3l. FixMatch,
UDA and FlexMatch add the weak view's forward without gradients (u) and the strong view's forward +
backward (3u): floor = (3l + 4u) / 3l. "data %" is the share of a step (with data) spent drawing
the batch: gathering, preprocessing and augmenting its views.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch

from genexp.command.compose import compose
from genexp.command.textbook_vat import TextbookVAT
from genexp.data.views import PLAIN
from genexp.errors import GenexpError
from genexp.methods.base import Batch, Method
from genexp.methods.weak_strong import WeakStrong
from genexp.models.base import GenexpModel


def cost_units(method: Method, l: int, u: int) -> float | None:
    """Forward units per step under the cost model, where the method has one."""
    from genexp.methods.supervised import Supervised
    from genexp.methods.vat import VAT

    if type(method) is Supervised:
        return 3 * l
    if isinstance(method, (VAT, TextbookVAT)) and not getattr(method, "include_labeled", False) \
            and not getattr(method, "entmin_weight", 0) and not getattr(method, "warm_start", False):
        return 3 * l + 4 * u + 2 * method.power_iters * u
    if isinstance(method, WeakStrong):
        # labelled forward + backward, weak forward without gradients, strong forward + backward. The
        # joint forward (the reference implementations') back-propagates through the weak rows too
        # (3l + 6u): the floor is what the objective needs, not what the reference code spends.
        return 3 * l + u + 3 * u
    return None


def all_views(methods: list[Method]) -> tuple[str, ...]:
    """The views every timed method needs, plus the plain unlabelled input (x_u) when any is asked."""
    wanted = sorted({v for m in methods for v in m.views})
    return (PLAIN, *[v for v in wanted if v != PLAIN]) if wanted else ()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MethodTimer:
    """One method's model copy, optimizer and fixed batch, timed a few steps at a time so that
    all methods are measured interleaved (machine noise then hits them alike)."""

    def __init__(self, model0: GenexpModel, method: Method, cfg: Any, source: Any, fixed: Batch,
                 device: torch.device, amp: Any, compiled: bool = False) -> None:
        from genexp.train.build import build_optimizer
        from genexp.train.compiled import CompiledLoss

        self.model = copy.deepcopy(model0).train()
        self.method, self.source, self.device, self.amp = method, source, device, amp
        self.optimizer, _ = build_optimizer(cfg, self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        method.setup(self.model, num_classes=int(source.y.max()) + 1, num_train=len(source.y), device=device)
        self.fixed = fixed
        self.times: dict[bool, list[float]] = {False: [], True: []}
        self.data_times: list[float] = []  # drawing the batch: gather, preprocess, augmentation (views)
        self.peak = 0.0
        self.loss = CompiledLoss(method) if compiled else method.loss
        self.compile_s = None
        if compiled:  # the first call compiles: timed apart, as what a run pays once
            t0 = time.perf_counter()
            self.run(1, with_data=False, record=False)
            self.compile_s = time.perf_counter() - t0

    def run(self, steps: int, with_data: bool, record: bool) -> None:
        from genexp.train.batches import train_step

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        for i in range(steps):
            sync(self.device)
            t0 = time.perf_counter()
            if with_data:
                batch = self.source.next(i, self.method.uses_unlabeled, self.method.views)
                sync(self.device)
                if record:
                    self.data_times.append(1000 * (time.perf_counter() - t0))
            else:
                batch = self.fixed
            train_step(self.model, self.method, self.optimizer, batch, amp=self.amp, params=self.params,
                       loss=self.loss)
            sync(self.device)
            if record:
                self.times[with_data].append(1000 * (time.perf_counter() - t0))
        self.peak = max(self.peak, peak_memory_mb(self.device))


def time_passes(model0: GenexpModel, cfg: Any, batch: Batch, device: torch.device, iters: int,
                warmup: int) -> list[dict[str, Any]]:
    """Each pass of the cost model alone, as bare torch calls on a copy of the model (no method
    code): what the hardware charges per forward unit at l rows and at u rows."""
    from genexp.train.build import build_optimizer

    m = copy.deepcopy(model0).train()
    opt, _ = build_optimizer(cfg, m)
    x_l, x_u, mask_l, mask_u = batch.x_l, batch.x_u, batch.mask_l, batch.mask_u
    l, u = len(x_l), len(x_u)

    def labelled() -> None:
        m.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(m(x_l, mask_l), batch.y_l).backward()

    def clean() -> None:
        with torch.no_grad():
            m(x_u, mask_u)

    def input_grad() -> None:
        h = m.embed(x_u).detach().requires_grad_(True)
        torch.autograd.grad(m.head(h, mask_u).logsumexp(-1).sum(), [h])

    def weights_grad() -> None:
        m.zero_grad(set_to_none=True)
        m(x_u, mask_u).logsumexp(-1).sum().backward()

    def input_and_weights_grad() -> None:  # the textbook port's power pass: loss.backward() fills .grad too
        m.zero_grad(set_to_none=True)
        h = m.embed(x_u).detach().requires_grad_(True)
        m.head(h, mask_u).logsumexp(-1).sum().backward()

    passes = [("labelled forward + backward", labelled, l, 3 * l),
              ("optimizer step", opt.step, l, None),
              ("clean forward, no graph", clean, u, u),
              ("forward + gradient w.r.t. the input only", input_grad, u, 2 * u),
              ("forward + backward (weights)", weights_grad, u, 3 * u),
              ("forward + backward (input and weights)", input_and_weights_grad, u, 3 * u)]
    times: dict[str, list[float]] = {name: [] for name, *_ in passes}
    labelled()  # the optimizer step needs gradients
    for i in range(warmup + iters):
        for name, fn, *_ in passes:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i >= warmup:
                times[name].append(1000 * (time.perf_counter() - t0))
    rows = []
    for name, _, n, units in passes:
        ms = statistics.median(times[name])
        rows.append({"pass": name, "rows": n, "units": units, "ms": ms,
                     "us_per_unit": None if units is None else 1000 * ms / units})
    return rows


def methods_to_time(cfg: Any, overrides: list[str], methods: list[str] | None, textbook: bool,
                    compiled: bool = False) -> list[tuple[str, Method, bool]]:
    """Supervised first (the reference), then the configured or listed methods (and each compiled,
    with `compiled`), then the textbook port. Each entry: (name, method, compiled?)."""
    from genexp.train.build import build_method

    plain = [o for o in overrides if not o.startswith(("method=", "method."))]
    todo: list[tuple[str, Method, bool]] = [("none", build_method(compose([*plain, "method=none"])), False)]
    for name in methods or [cfg.method.name]:
        def build() -> Method:
            return build_method(compose([*overrides, f"method={name}"]) if methods else cfg)
        if name != "none":
            todo.append((name, build(), False))
        if compiled:
            todo.append((f"{name} (compiled)", build(), True))
    if textbook:
        m = cfg.method if cfg.method.name.startswith("vat") else compose([*plain, "method=vat"]).method
        todo.append(("vat (textbook port)", TextbookVAT(eps=m.eps, power_iters=m.power_iters), False))
    return todo


def time_interleaved(timers: list[MethodTimer], iters: int, warmup: int) -> None:
    """Warm every timer up, then time them a chunk at a time in turn, on the fixed batch and then
    with data drawn per step."""
    for timer in timers:
        timer.run(warmup, with_data=False, record=False)
    chunk = max(1, iters // 5)
    for with_data in (False, True):
        done = 0
        while done < iters:
            for timer in timers:
                timer.run(min(chunk, iters - done), with_data=with_data, record=True)
            done += chunk


def rows_for(todo: list[tuple[str, Method, bool]], timers: list[MethodTimer], l: int, u: int) -> list[dict[str, Any]]:
    rows = []
    for (name, method, _), timer in zip(todo, timers):
        ms = statistics.median(timer.times[False])
        with_data = statistics.median(timer.times[True])
        rows.append({"method": name, "ms": ms, "ms_with_data": with_data,
                     "data_share": statistics.median(timer.data_times) / with_data,
                     "peak_mem_mb": timer.peak, "cost_units": cost_units(method, l, u),
                     "samples_per_s": 1000 * (l + (u if method.uses_unlabeled else 0)) / ms,
                     "compile_s": timer.compile_s})
    sup_ms, sup_units = rows[0]["ms"], rows[0]["cost_units"]
    for r in rows:
        r["ratio"] = r["ms"] / sup_ms
        r["floor"] = r["cost_units"] / sup_units if r["cost_units"] else None
        r["ratio_to_floor"] = r["ratio"] / r["floor"] if r["floor"] else None
    return rows


def passes_report(model: GenexpModel, cfg: Any, batch: Batch, device: torch.device, amp: Any, iters: int,
                  warmup: int) -> dict[str, Any]:
    with amp():
        passes = time_passes(model, cfg, batch, device, iters, warmup)
    t = {p["pass"]: p["ms"] for p in passes}
    base = t["labelled forward + backward"] + t["optimizer step"]
    extra = sum(t[k] for k in ("clean forward, no graph", "forward + gradient w.r.t. the input only",
                               "forward + backward (weights)"))
    # VAT's passes, each timed alone, over a supervised step's: the floor this hardware allows
    # when nothing but the passes themselves costs (one power iteration, no shared pass).
    port = extra - t["forward + gradient w.r.t. the input only"] + t["forward + backward (input and weights)"]
    # The port's passes over genexp's: the most that skipping weight gradients in the power
    # iteration can gain here. The cost model prices those weight gradients at one forward unit
    # per row (10/9 for l = u); hardware where they cost less allows less.
    return {"passes": passes, "passes_floor": (base + extra) / base, "port_passes_ratio": (base + port) / (base + extra)}


def run(overrides: list[str], methods: list[str] | None, iters: int, warmup: int, textbook: bool,
        passes: bool = False, compiled: bool = False) -> dict[str, Any]:
    from genexp.train.setup import prepare, setup_run

    cfg = compose(overrides)
    device = prepare(cfg)
    torch.backends.cudnn.benchmark = True
    setup = setup_run(cfg, device)  # the data, split, model and batches `genexp train` would use
    todo = methods_to_time(cfg, overrides, methods, textbook, compiled)
    l, u = cfg.batch_size, cfg.unlabeled_batch_size
    for name, method, _ in todo:
        setup.source.require(method.views, name, cfg.dataset.name)
    # One fixed batch for every method: two draws of ragged text can differ several-fold in cost.
    fixed = setup.source.next(0, True, all_views([m for _, m, _ in todo]))
    timers = [MethodTimer(setup.model, method, cfg, setup.source, fixed, device, setup.amp, c) for _, method, c in todo]
    time_interleaved(timers, iters, warmup)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    report = {"dataset": cfg.dataset.name, "model": cfg.model.name, "device": gpu or "cpu",
              "threads": torch.get_num_threads(), "batch_size": l, "unlabeled_batch_size": u,
              "amp": bool(setup.amp is not nullcontext), "iters": iters, "warmup": warmup,
              "rows": rows_for(todo, timers, l, u)}
    if passes:
        report.update(passes_report(setup.model, cfg, fixed, device, setup.amp, iters, warmup))
    return report


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    threads = f"{report['threads']} thread{'' if report['threads'] == 1 else 's'}"
    title = (f"{report['model']} on {report['dataset']} | {report['device']} ({threads}) | "
             f"l={report['batch_size']} u={report['unlabeled_batch_size']} | amp={report['amp']} | "
             f"median of {report['iters']} after {report['warmup']} warm-up")
    t = Table(title=title)
    for col in ("method", "ms/step", "ms/step with data", "data %", "× supervised", "floor ×", "× floor",
                "samples/s", "peak MiB", "compile s"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for r in report["rows"]:
        t.add_row(r["method"], fmt(r["ms"], ".2f"), fmt(r["ms_with_data"], ".2f"), fmt(100 * r["data_share"], ".1f"),
                  fmt(r["ratio"], ".2f"),
                  fmt(r["floor"], ".2f"), fmt(r["ratio_to_floor"], ".3f"), fmt(r["samples_per_s"], ",.0f"),
                  fmt(r["peak_mem_mb"], ",.0f"), fmt(r.get("compile_s"), ".1f"))
    console = Console(width=max(120, Console().width))
    console.print(t)
    if "passes" in report:
        p = Table(title="bare passes, each alone (no method code): what a forward unit costs at l and at u rows")
        for col in ("pass", "rows", "units", "ms", "µs / unit"):
            p.add_column(col, justify="left" if col == "pass" else "right")
        for r in report["passes"]:
            p.add_row(r["pass"], str(r["rows"]), fmt(r["units"], "d"), fmt(r["ms"], ".3f"),
                      fmt(r["us_per_unit"], ".2f"))
        console.print(p)
        console.print(f"sum of VAT's passes / (labelled pass + optimizer step) = {report['passes_floor']:.2f} "
                      f"(cost-model floor: {1 + 2 * report['unlabeled_batch_size'] / report['batch_size']:.2f})")
        console.print(f"the textbook port's passes / genexp's (the most skipping weight gradients in the power "
                      f"iteration can gain here) = {report['port_passes_ratio']:.3f}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="genexp bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides as for genexp train (model=cnn13 batch_size=64 ...)")
    p.add_argument("--methods", default=None, help="comma-separated methods to time (default: the configured one)")
    p.add_argument("--iters", type=int, default=30, help="timed steps per method (median reported)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--textbook", action="store_true",
                   help="also time a textbook VAT port that calls loss.backward() in the power iteration")
    p.add_argument("--passes", action="store_true",
                   help="also time each pass of the cost model alone (bare torch calls): per-unit cost at l and u rows")
    p.add_argument("--compiled", action="store_true",
                   help="also time each method's step compiled whole (compile=true; its compile time shown apart)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    # Intermixed: `genexp bench method=vat --passes cpu_threads=1` takes overrides on both sides of a
    # flag, as genexp train does; plain parse_args stops the positional list at the first flag.
    args = p.parse_intermixed_args(argv)
    try:
        if args.iters <= 0 or args.warmup < 0:
            raise GenexpError("--iters must be > 0 and --warmup >= 0")
        report = run(args.overrides, args.methods.split(",") if args.methods else None, args.iters, args.warmup,
                     args.textbook, args.passes, args.compiled)
    except GenexpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # Hydra composition errors: one line, like genexp train
        from genexp.errors import one_line, show_tracebacks

        if show_tracebacks():
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0
