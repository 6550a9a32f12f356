"""`genexp plot`: PNG figures of recorded runs.

  labels_<dataset>_<model>_<metric>.png   the metric vs the number of labels, one line per method,
                                           error bars = sample std over seeds
  curves_<dataset>_<model>_l<labels>.png  val and test accuracy vs step from metrics.jsonl, mean over
                                           seeds (completed runs) with a shaded ±1 std band

Failed and incomplete runs are not plotted but counted in the legends.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from genexp.errors import GenexpError
from genexp.runs.files import atomic_write
from genexp.runs.record import Status, is_run_record
from genexp.tables.table import Metric, differing_keys, field_value, load_results, parse_metric, safe_name

CURVE_METRICS = ("val_acc", "test_acc")


def _num(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return math.nan


PLOT_KEYS = ["dataset", "model", "method", "labels"]


def _method_order(methods: set[str]) -> list[str]:
    return sorted(methods, key=lambda m: (m != "none" and not m.startswith("none,"), m))


def line_of(r: dict[str, Any], extra: list[str]) -> str:
    """A run's line: its method, and the keys that set it apart from runs of the same method
    (`genexp table`'s rule: runs that differ in anything but the seed are never pooled)."""
    return ", ".join([str(r.get("method", "?"))] + [f"{k}={field_value(r, k)}" for k in extra])


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Records of metrics.jsonl; a torn last line (a run still writing) is skipped."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            records.append(rec)
    return records


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))


def _counts_note(n: int, failed: int, incomplete: int) -> str:
    parts = [f"{n} runs"] + ([f"{failed} failed"] if failed else [])
    parts += [f"{incomplete} incomplete"] if incomplete else []
    return ", ".join(parts)


def plot_vs_labels(results: list[dict[str, Any]], metric: Metric, out: Path, extra: list[str] = ()) -> list[Path]:
    import matplotlib.pyplot as plt

    # (dataset, model) -> method -> labels -> runs
    figs: dict[tuple[str, str], dict[str, dict[str, list[dict]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        if r.get("status") == Status.UNREADABLE:
            continue
        key = (str(r.get("dataset", "?")), str(r.get("model", "?")))
        figs[key][line_of(r, list(extra))][str(r.get("labels", "?"))].append(r)
    written = []
    for (dataset, model), by_method in sorted(figs.items()):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        all_x: list[float] = []
        for method in _method_order(set(by_method)):
            xs, ms, ss = [], [], []
            n_tot = failed = incomplete = 0
            for labels, runs in by_method[method].items():
                vals = [v for r in runs if r.get("status") == Status.COMPLETED and (v := metric.value(r)) is not None]
                failed += sum(r.get("status") == Status.FAILED for r in runs)
                incomplete += sum(r.get("status") not in (Status.COMPLETED, Status.FAILED) for r in runs)
                n_tot += len(vals)
                x = _num(labels)
                if vals and not math.isnan(x):
                    m, s = _mean_std(vals)
                    xs.append(x)
                    ms.append(m)
                    ss.append(s)
            order = sorted(range(len(xs)), key=xs.__getitem__)
            xs, ms, ss = [xs[i] for i in order], [ms[i] for i in order], [ss[i] for i in order]
            all_x += xs
            ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=4, linewidth=1.5,
                        label=f"{method} ({_counts_note(n_tot, failed, incomplete)})")
        if all_x and min(all_x) > 0 and max(all_x) / min(all_x) >= 10:
            ax.set_xscale("log")
        if all_x:
            ticks = sorted(set(all_x))
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel("labelled examples")
        ax.set_ylabel(f"{metric.name}{metric.unit}")
        ax.set_title(f"{dataset} · {model}: {metric.name} vs labels\nmean ± sample std over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out / f"labels_{safe_name(dataset)}_{safe_name(model)}_{safe_name(metric.name)}.png"
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def _draw_band(ax: Any, key: str, curves: list[list[dict[str, Any]]], color: str, label: str) -> bool:
    """The mean of `key` over the runs' curves with a ±1 std band; False when no run logged it."""
    per_step: dict[float, list[float]] = defaultdict(list)
    for c in curves:
        last = {rec["step"]: rec for rec in c}  # a resumed run may repeat steps: keep the latest
        for step, rec in last.items():
            v = rec.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                per_step[step].append(100.0 * v if key.endswith("_acc") else v)
    if not per_step:
        return False
    steps = sorted(per_step)
    stats = [_mean_std(per_step[s]) for s in steps]
    mean = [m for m, _ in stats]
    lo = [m - s for m, s in stats]
    hi = [m + s for m, s in stats]
    ax.plot(steps, mean, color=color, linewidth=1.6, label=label)
    ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
    return True


def plot_curves(results: list[dict[str, Any]], out: Path, keys: tuple[str, ...] = CURVE_METRICS,
                extra: list[str] = ()) -> tuple[list[Path], list[str]]:
    """One figure per (dataset, model, labels), one panel per metrics.jsonl key; accuracies in %."""
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.get("status") == Status.UNREADABLE:
            continue
        key = (str(r.get("dataset", "?")), str(r.get("model", "?")), str(r.get("labels", "?")))
        groups[key][line_of(r, list(extra))].append(r)
    written, notes = [], []
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], _num(kv[0][2])))
    for (dataset, model, labels), by_method in ordered:
        accuracy = all(k.endswith("_acc") for k in keys)
        fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.2), sharey=accuracy,
                                 squeeze=False)
        axes = axes[0]
        drew = False
        for i, method in enumerate(_method_order(set(by_method))):
            runs = by_method[method]
            completed = [r for r in runs if r.get("status") == Status.COMPLETED]
            curves = [c for r in completed if (c := read_metrics(Path(r["_path"])))]
            not_done = len(runs) - len(completed)
            if not curves:
                if completed:
                    notes.append(f"{dataset}/{model}/labels={labels}/{method}: no metrics.jsonl in its completed runs")
                continue
            label = f"{method} (n={len(curves)}"
            label += (f", {not_done} not completed, not shown" if not_done else "") + ")"
            for ax, key in zip(axes, keys):
                drew |= _draw_band(ax, key, curves, f"C{i % 10}", label)
        if not drew:
            plt.close(fig)
            continue
        for ax, key in zip(axes, keys):
            ax.set_title(f"{key} (%)" if key.endswith("_acc") else key)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("accuracy (%), mean ± std over seeds" if accuracy else "mean ± std over seeds")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{dataset} · {model} · {labels} labels: training curves")
        suffix = "" if keys == CURVE_METRICS else "_" + "_".join(safe_name(k) for k in keys)
        path = out / f"curves_{safe_name(dataset)}_{safe_name(model)}_l{safe_name(labels)}{suffix}.png"
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    return written, notes


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="genexp plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="*", type=Path, default=[Path("outputs")], help="run/sweep dirs (default outputs/)")
    p.add_argument("--out", type=Path, default=None, help="directory for the PNGs (default: plots/ in the first DIR)")
    p.add_argument("--metric", default="test_acc",
                   help="y axis of the labels plot: test_acc (default), test_err, val_acc, val_err, ...")
    p.add_argument("--curves", default=",".join(CURVE_METRICS),
                   help="metrics.jsonl keys for the training-curve panels, comma-separated (default val_acc,test_acc; "
                        "e.g. train_consistency,train_implied)")
    args = p.parse_args(argv)
    keys = tuple(k.strip() for k in args.curves.split(",") if k.strip())
    try:
        if not keys:
            raise GenexpError("--curves is empty: give metrics.jsonl keys, e.g. --curves val_acc,test_acc")
        metric = parse_metric(args.metric)
        results = load_results(args.dirs)
        where = ", ".join(map(str, args.dirs))
        if not results:
            raise GenexpError(f"no result.json under {where}: run genexp train first")
        runs = [r for r in results if is_run_record(r)]
        if not runs:  # another tool's dir: nothing of genexp's to draw, and no chart written into it
            raise GenexpError(f"no genexp run under {where}: its {len(results)} result.json "
                              f"file{'s are' if len(results) > 1 else ' is'} not genexp train's (no status, dataset, "
                              f"model and method); pass the run or sweep dirs genexp train wrote (default outputs/)")
        if len(runs) < len(results):
            print(f"note: {len(results) - len(runs)} result.json under {where} not written by genexp train (or "
                  f"unreadable): not plotted", file=sys.stderr)
        results = runs
        completed = [r for r in results if r.get("status") == Status.COMPLETED]
        if completed and not any(metric.value(r) is not None for r in completed):
            raise GenexpError(f"no completed run has a numeric {metric.key!r}: use --metric test_acc or test_err")
        # A curve key no run's metrics.jsonl holds is a typo, not an empty panel to skip silently.
        logged: set[str] = set()
        for r in results:
            if r.get("status") != Status.UNREADABLE and "_path" in r:
                for rec in read_metrics(Path(r["_path"])):
                    logged.update(k for k, v in rec.items() if isinstance(v, (int, float)) and k != "step")
        unknown = [k for k in keys if k not in logged]
        if logged and unknown:
            raise GenexpError(f"--curves {','.join(unknown)}: no run's metrics.jsonl has "
                              f"{'this key' if len(unknown) == 1 else 'these keys'}: use some of "
                              f"{', '.join(sorted(logged))}")
    except GenexpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    out = args.out if args.out is not None else args.dirs[0] / "plots"
    extra = differing_keys(results, PLOT_KEYS)
    if extra:
        print(f"warning: runs differ in {', '.join(extra)} (not only in seed): drawn as separate lines keyed by "
              f"{'them' if len(extra) > 1 else 'it'}", file=sys.stderr)
    written = plot_vs_labels(results, metric, out, extra)
    curves, notes = plot_curves(results, out, keys, extra)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    for path in written + curves:
        print(f"wrote {path}")
    return 0
