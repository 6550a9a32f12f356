"""`genexp plot`: PNG figures of recorded runs.

  labels_<dataset>_<model>_<metric>.png   the metric vs the number of labels, one line per method,
                                           error bars = sample std over seeds
                                           (skipped, with a note, when the runs have one labels value)
  curves_<dataset>_<model>_l<labels>.png  val and test accuracy vs step from metrics.jsonl, mean over
                                           seeds (completed runs) with a shaded ±1 std band
  forest_<dataset>_<model>_<metric>_vs_<KEY>_<VALUE>.png   with --compare KEY=VALUE: a forest plot, one
                                           line per compared row: its mean paired difference Δ from the
                                           baseline runs, whiskers at the Student-t interval (the same
                                           pairs and interval as `genexp table --compare`), filled when
                                           the interval excludes 0

Failed and incomplete runs are not plotted but counted in the legends. --format pdf writes each
figure as PDF instead, --format png,pdf as both.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genexp.errors import GenexpError
from genexp.runs.files import atomic_write
from genexp.runs.record import Status, is_run_record
from genexp.tables.cells import method_first
from genexp.tables.compare import Baseline, Comparison, Comparisons, compare
from genexp.tables.copies import drop_copies
from genexp.tables.render import ValueTexts
from genexp.tables.run import Run
from genexp.tables.table import Metric, differing_keys, field_value, load_results, parse_metric, safe_name

CURVE_METRICS = ("val_acc", "test_acc")
FORMATS = ("png", "pdf")
UNSET = "?"  # field_value's placeholder for a key a run does not have: never shown as such

# The metric keys genexp records, in words; any other key reads with its underscores as spaces.
METRIC_WORDS = {
    "test_acc": "test accuracy", "test_err": "test error",
    "val_acc": "validation accuracy", "val_err": "validation error",
    "train_acc": "training accuracy", "train_err": "training error",
    "test_acc_final": "test accuracy at the last step", "test_err_final": "test error at the last step",
    "val_acc_final": "validation accuracy at the last step", "val_err_final": "validation error at the last step",
    "train_acc_final": "training accuracy at the last step", "train_err_final": "training error at the last step",
    "test_loss": "test loss", "val_loss": "validation loss", "train_loss": "training loss", "loss": "training loss",
    "train_time_s": "training time (s)", "step_time_ms": "step time (ms)",
}


def metric_words(name: str) -> str:
    """A metric key in words: test_acc -> "test accuracy"; an unknown key with spaces for underscores."""
    return METRIC_WORDS.get(name, name.replace("_", " ").strip() or name)


def metric_label(metric: Metric) -> str:
    """The axis label of a metric's values: "test accuracy (%)"."""
    return metric_words(metric.name) + metric.unit


def delta_label(metric: Metric) -> str:
    """The axis label of a paired difference: "paired Δ test accuracy (percentage points)"."""
    return f"paired Δ {metric_words(metric.name)}" + (" (percentage points)" if metric.percent else "")


def setting(key: str, value: str, bare: bool = False) -> str:
    """One part of a line's or row's name: "labels=100", the value alone where `bare`, never "?"."""
    if value == UNSET:
        return f"{key} not set"
    return value if bare else f"{key}={value}"


def _num(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return math.nan


PLOT_KEYS = ["dataset", "model", "method", "labels"]


def _method_order(methods: set[str]) -> list[str]:
    return sorted(methods, key=lambda m: (m != "none" and not m.startswith("none,"), m))


def line_of(r: Run, extra: list[str]) -> str:
    """A run's line: its method, and the keys that set it apart from runs of the same method
    (`genexp table`'s rule: runs that differ in anything but the seed are never pooled)."""
    return ", ".join([setting("method", field_value(r, "method"), bare=True)]
                     + [setting(k, field_value(r, k)) for k in extra])


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
    fmt = path.suffix.lstrip(".")
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=120, bbox_inches="tight"))


def _save_all(fig: Any, path: Path, formats: tuple[str, ...]) -> list[Path]:
    """The figure as `path` in each format (the suffix replaced); closes it; the paths written."""
    import matplotlib.pyplot as plt

    paths = [path.with_suffix("." + f) for f in formats]
    for p in paths:
        _save(fig, p)
    plt.close(fig)
    return paths


def _legend_outside(ax: Any, **kw: Any) -> None:
    """The legend right of the axes, where it cannot cover a line or a point."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, **kw)


def _counts_note(n: int, failed: int, incomplete: int) -> str:
    parts = [f"{n} runs"] + ([f"{failed} failed"] if failed else [])
    parts += [f"{incomplete} incomplete"] if incomplete else []
    return ", ".join(parts)


def plot_vs_labels(results: list[Run], metric: Metric, out: Path, extra: list[str] = (),
                   formats: tuple[str, ...] = ("png",)) -> tuple[list[Path], list[str]]:
    """One chart per (dataset, model) of the metric vs labels; a note instead where there is one labels value."""
    import matplotlib.pyplot as plt

    # (dataset, model) -> method -> labels -> runs
    figs: dict[tuple[str, str], dict[str, dict[str, list[Run]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        if not r.readable:
            continue
        key = (str(r.get("dataset", "?")), str(r.get("model", "?")))
        figs[key][line_of(r, list(extra))][str(r.get("labels", "?"))].append(r)
    written, notes = [], []
    for (dataset, model), by_method in sorted(figs.items()):
        labels_values = {x for runs in by_method.values() for x in runs if not math.isnan(_num(x))}
        if len(labels_values) < 2:
            shown = f" ({next(iter(labels_values))})" if labels_values else ""
            notes.append(f"{dataset}/{model}: one labels value{shown}: no {metric_words(metric.name)}-vs-labels "
                         f"chart (it would be one point per line)")
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        all_x: list[float] = []
        for method in _method_order(set(by_method)):
            xs, ms, ss = [], [], []
            n_tot = failed = incomplete = 0
            for labels, runs in by_method[method].items():
                vals = [v for r in runs if r.status == Status.COMPLETED and (v := metric.value(r)) is not None]
                failed += sum(r.status == Status.FAILED for r in runs)
                incomplete += sum(r.status not in (Status.COMPLETED, Status.FAILED) for r in runs)
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
        ax.set_ylabel(metric_label(metric))
        ax.set_title(f"{dataset} · {model}: {metric_words(metric.name)} vs labels\nmean ± sample std over seeds")
        ax.grid(alpha=0.3)
        _legend_outside(ax)
        path = out / f"labels_{safe_name(dataset)}_{safe_name(model)}_{safe_name(metric.name)}.png"
        written += _save_all(fig, path, formats)
    return written, notes


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


def plot_curves(results: list[Run], out: Path, keys: tuple[str, ...] = CURVE_METRICS,
                extra: list[str] = (), formats: tuple[str, ...] = ("png",)) -> tuple[list[Path], list[str]]:
    """One figure per (dataset, model, labels), one panel per metrics.jsonl key; accuracies in %."""
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str, str], dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if not r.readable:
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
            completed = [r for r in runs if r.status == Status.COMPLETED]
            curves = [c for r in completed if (c := read_metrics(Path(r.path)))]
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
            ax.set_title(metric_words(key) + (" (%)" if key.endswith("_acc") else ""))
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("accuracy (%), mean ± std over seeds" if accuracy else "mean ± std over seeds")
        _legend_outside(axes[-1])
        fig.suptitle(f"{dataset} · {model} · {'labels not set' if labels == UNSET else labels + ' labels'}: "
                     f"training curves")
        suffix = "" if keys == CURVE_METRICS else "_" + "_".join(safe_name(k) for k in keys)
        path = out / f"curves_{safe_name(dataset)}_{safe_name(model)}_l{safe_name(labels)}{suffix}.png"
        written += _save_all(fig, path, formats)
    return written, notes


# --------------------------------------------------------------------------- forest plot (--compare)


@dataclass
class ForestRow:
    """One compared row: its name, and its comparison with the baseline (compare.py's pairs and interval)."""

    name: str
    comparison: Comparison

    @property
    def resolved(self) -> bool:
        return self.comparison.verdict in ("better", "worse")

    @property
    def pairs_text(self) -> str:
        c = self.comparison
        if c.n_pairs == 0:
            return "0 pairs (Welch, unpaired)" if c.welch else "0 pairs: not drawn"
        return f"{c.n_pairs} pair{'s' if c.n_pairs > 1 else ''}" + (": no interval" if c.n_pairs == 1 else "")


def forest_keys(results: list[Run], base: Baseline, extra: list[str]) -> tuple[list[str], list[str]]:
    """(figure keys, row keys): one figure per dataset and model; rows by the compared key and what else varies."""
    fig_keys = [k for k in ("dataset", "model") if k != base.key]
    row_keys = list(dict.fromkeys([base.key] + [k for k in PLOT_KEYS + list(extra) if k not in fig_keys]))
    return fig_keys, row_keys


def forest_comparisons(results: list[Run], metric: Metric, base: Baseline, confidence: float,
                       extra: list[str] = ()) -> Comparisons:
    """genexp.tables.compare's pairs, Δ and intervals, exactly as `genexp table --compare` computes them."""
    fig_keys, row_keys = forest_keys(results, base, list(extra))
    comps = compare(results, fig_keys + row_keys, metric, base, confidence)
    if not comps.rows:
        raise GenexpError(f"--compare {base}: every completed run with {metric.key!r} has {base}: nothing to "
                          f"compare it with (run another {base.key} on the same seeds)")
    return comps


def forest_rows(results: list[Run], metric: Metric, base: Baseline, confidence: float,
                extra: list[str] = (), comps: Comparisons | None = None) -> dict[tuple[str, ...], list[ForestRow]]:
    """Per (dataset, model): the compared rows, top to bottom, named by the keys that tell them apart
    (`comps`: forest_comparisons' for these arguments, when the caller has them already)."""
    fig_keys, row_keys = forest_keys(results, base, list(extra))
    comps = comps if comps is not None else forest_comparisons(results, metric, base, confidence, extra)
    by_fig: dict[tuple[str, ...], dict[tuple[str, ...], Comparison]] = defaultdict(dict)
    for key, c in comps.rows.items():
        by_fig[key[:len(fig_keys)]][key[len(fig_keys):]] = c
    texts = ValueTexts.of(results, row_keys).texts  # a search's ε at 3 significant digits, as tables show it
    out: dict[tuple[str, ...], list[ForestRow]] = {}
    for fig_key, rows in sorted(by_fig.items()):
        # A key is part of the names where the rows differ in it; the compared key always is.
        shown = [i for i, k in enumerate(row_keys) if k == base.key or len({r[i] for r in rows}) > 1]
        named = []
        for key in sorted(rows, key=lambda k: method_first(k, row_keys)):
            parts = [setting(row_keys[i], texts.get(row_keys[i], {}).get(key[i], key[i]), bare=row_keys[i] == "method")
                     for i in shown]
            named.append(ForestRow(", ".join(parts), rows[key]))
        out[fig_key] = named
    return out


def forest_figure(rows: list[ForestRow], metric: Metric, base: Baseline, confidence: float, title: str) -> Any:
    """The forest plot of `rows` as a matplotlib Figure (the caller saves and closes it)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    level = f"{100 * confidence:g} %"
    fig, ax = plt.subplots(figsize=(7.0, 1.9 + 0.42 * len(rows)), layout="constrained")
    ys = list(range(len(rows)))[::-1]  # the first row at the top
    xs: list[float] = [0.0]
    kinds: set[str] = set()
    for y, row in zip(ys, rows):
        c = row.comparison
        if c.n_pairs:
            delta, ci = c.delta, c.interval
            kind = "resolved" if row.resolved else ("open" if ci else "one")
            marker, style = "o", "-"
        elif c.welch:
            delta, ci = c.welch[0], c.welch[1:]
            kind, marker, style = "welch", "s", "--"
        else:
            continue
        kinds.add(kind)
        if ci:
            ax.plot(ci, [y, y], color="C0", linewidth=1.6, linestyle=style, solid_capstyle="butt")
            ax.plot(ci, [y, y], color="C0", linestyle="none", marker="|", markersize=10)
            xs += list(ci)
        ax.plot([delta], [y], marker=marker, markersize=8, color="C0", markeredgecolor="C0", linestyle="none",
                markerfacecolor="C0" if kind == "resolved" else "white", zorder=3)
        xs.append(delta)
    ax.axvline(0.0, color="0.25", linewidth=1.0, zorder=1)
    lo, hi = min(xs), max(xs)
    pad = 0.08 * (hi - lo) if hi > lo else 1.0
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_yticks(ys, [r.name for r in rows])
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(delta_label(metric))
    right = ax.twinx()  # the pairs beside each row
    right.set_ylim(ax.get_ylim())
    right.set_yticks(ys, [r.pairs_text for r in rows], fontsize=8, color="0.3")
    right.tick_params(axis="y", length=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
        right.spines[side].set_visible(False)
    ax.set_title(f"{title}\n{metric_words(metric.name)}: mean paired difference from {base}, "
                 f"{level} Student-t interval", fontsize=10)
    entries = {
        "resolved": (dict(marker="o", markerfacecolor="C0"), f"filled: resolved ({level} interval excludes 0)"),
        "open": (dict(marker="o", markerfacecolor="white"), f"open: not resolved ({level} interval includes 0)"),
        "one": (dict(marker="o", markerfacecolor="white", linestyle="none"), "open, no whiskers: one pair, no interval"),
        "welch": (dict(marker="s", markerfacecolor="white", linestyle="--"),
                  "open square: no pairs; Welch's unpaired interval"),
    }
    handles = [Line2D([], [], color="C0", markeredgecolor="C0", markersize=7, **({"linestyle": "-"} | style))
               for k, (style, _) in entries.items() if k in kinds]
    texts = [text for k, (_, text) in entries.items() if k in kinds]
    if handles:
        fig.legend(handles, texts, loc="outside lower center", fontsize=8, frameon=False)
    return fig


def plot_forest(results: list[Run], metric: Metric, base: Baseline, confidence: float, out: Path,
                extra: list[str] = (), formats: tuple[str, ...] = ("png",),
                comps: Comparisons | None = None) -> list[Path]:
    written = []
    fig_keys, _ = forest_keys(results, base, list(extra))
    for fig_key, rows in forest_rows(results, metric, base, confidence, extra, comps).items():
        title = " · ".join(setting(k, v, bare=True) for k, v in zip(fig_keys, fig_key)) or "all runs"
        fig = forest_figure(rows, metric, base, confidence, title)
        name = "_".join(["forest", *(safe_name(v) for v in fig_key), safe_name(metric.name), "vs",
                         safe_name(base.key), safe_name(base.value)])
        written += _save_all(fig, out / f"{name}.png", formats)
    return written


def _formats(text: str) -> tuple[str, ...]:
    fmts = [f.strip().lower() for f in text.split(",") if f.strip()]
    fmts = [x for f in fmts for x in (FORMATS if f == "all" else (f,))]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise GenexpError(f"--format {text!r}: give png, pdf, png,pdf or all")
    return tuple(dict.fromkeys(fmts))


def plotted_runs(dirs: list[Path], metric: Metric) -> list[Run]:
    """genexp train's runs under `dirs`: another tool's result.json (or an unreadable one) is noted
    and left out; none at all, or no completed run with `metric`, is refused."""
    results = load_results(dirs)
    where = ", ".join(map(str, dirs))
    if not results:
        raise GenexpError(f"no result.json under {where}: run genexp train first")
    runs = [r for r in results if r.record is not None and is_run_record(r.record)]
    if not runs:  # another tool's dir: nothing of genexp's to draw, and no chart written into it
        raise GenexpError(f"no genexp run under {where}: its {len(results)} result.json "
                          f"file{'s are' if len(results) > 1 else ' is'} not genexp train's (no status, dataset, "
                          f"model and method); pass the run or sweep dirs genexp train wrote (default outputs/)")
    if len(runs) < len(results):
        print(f"note: {len(results) - len(runs)} result.json under {where} not written by genexp train (or "
              f"unreadable): not plotted", file=sys.stderr)
    runs, copies = drop_copies(runs)  # a run found twice (a copy, a rerun) is drawn once, as tables count it
    for note in copies:
        print(f"note: {note}", file=sys.stderr)
    completed = [r for r in runs if r.status == Status.COMPLETED]
    if completed and not any(metric.value(r) is not None for r in completed):
        raise GenexpError(f"no completed run has a numeric {metric.key!r}: use --metric test_acc or test_err")
    return runs


def check_curve_keys(runs: list[Run], keys: tuple[str, ...]) -> None:
    """A curve key no run's metrics.jsonl holds is a typo, not an empty panel to skip silently."""
    logged: set[str] = set()
    for r in runs:
        for rec in read_metrics(Path(r.path)):
            logged.update(k for k, v in rec.items() if isinstance(v, (int, float)) and k != "step")
    unknown = [k for k in keys if k not in logged]
    if logged and unknown:
        raise GenexpError(f"--curves {','.join(unknown)}: no run's metrics.jsonl has "
                          f"{'this key' if len(unknown) == 1 else 'these keys'}: use some of "
                          f"{', '.join(sorted(logged))}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="genexp plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="*", type=Path, default=[Path("outputs")], help="run/sweep dirs (default outputs/)")
    p.add_argument("--out", type=Path, default=None, help="directory for the PNGs (default: plots/ in the first DIR)")
    p.add_argument("--metric", default="test_acc",
                   help="y axis of the labels plot, Δ of the forest plot: test_acc (default), test_err, val_acc, "
                        "val_err, ...")
    p.add_argument("--curves", default=",".join(CURVE_METRICS),
                   help="metrics.jsonl keys for the training-curve panels, comma-separated (default val_acc,test_acc; "
                        "e.g. train_consistency,train_implied)")
    p.add_argument("--compare", default=None, metavar="KEY=VALUE",
                   help="also draw a forest plot: each row's mean paired difference from the baseline runs KEY=VALUE "
                        "(e.g. method=none) with its Student-t interval, as genexp table --compare computes them")
    p.add_argument("--confidence", type=float, default=0.95, help="level of --compare's intervals (default 0.95)")
    p.add_argument("--format", default="png", help="png (default), pdf, png,pdf or all")
    args = p.parse_args(argv)
    keys = tuple(k.strip() for k in args.curves.split(",") if k.strip())
    try:
        formats = _formats(args.format)
        base = Baseline.parse(args.compare) if args.compare else None
        if not keys:
            raise GenexpError("--curves is empty: give metrics.jsonl keys, e.g. --curves val_acc,test_acc")
        metric = parse_metric(args.metric)
        results = plotted_runs(args.dirs, metric)
        check_curve_keys(results, keys)
        extra = differing_keys(results, PLOT_KEYS)
        if base is not None:  # the pairs, before anything is drawn: a baseline no run has is refused here
            comps = forest_comparisons(results, metric, base, args.confidence, extra)
    except GenexpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    out = args.out if args.out is not None else args.dirs[0] / "plots"
    if extra:
        print(f"warning: runs differ in {', '.join(extra)} (not only in seed): drawn as separate lines keyed by "
              f"{'them' if len(extra) > 1 else 'it'}", file=sys.stderr)
    forest: list[Path] = []
    if base is not None:
        forest = plot_forest(results, metric, base, args.confidence, out, extra, formats, comps)
        for note in comps.messages():
            print(f"note: {note}", file=sys.stderr)
    written, notes = plot_vs_labels(results, metric, out, extra, formats)
    curves, curve_notes = plot_curves(results, out, keys, extra, formats)
    notes += curve_notes
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    for path in forest + written + curves:
        print(f"wrote {path}")
    return 0
