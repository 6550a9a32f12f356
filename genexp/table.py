"""`genexp table`: mean ± std over seeds of recorded runs, beside published figures.

Two layouts, both by default:
  pivot  rows = --rows (default dataset,model,method; keys constant over all runs move to the
         caption), columns = --cols (default labels); each cell "mean ± std (n=3, 1 failed)";
         the best cell of each column in bold (max for accuracies, min for errors).
  flat   one line per --by group (default dataset,model,method,labels) with n and failed columns.
Giving only --by selects the flat layout, only --rows/--cols the pivot (or say --layout).

Failed and incomplete runs are never dropped: each cell says how many there were. The std is the
sample standard deviation (n − 1). test_err = 100 − test_acc (likewise val_err, *_err_final).
Written as Markdown and CSV by default (--format md,csv,latex or all), atomically.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from genexp.errors import GenexpError
from genexp.records import atomic_write_text

DEFAULT_BY = "dataset,model,method,labels"
DEFAULT_ROWS = "dataset,model,method"
DEFAULT_COLS = "labels"
# Keys that make runs different experiments, from result.json (runs without config.yaml too).
IDENTITY_KEYS = ("dataset", "model", "method", "labels", "steps")
# Resolved-config keys that say how a run ran, not what it is: runs may differ in them (and in
# the seed) and still share a cell. Every other key of config.yaml must agree within a cell.
HOW_TO_RUN_KEYS = {"seed", "progress", "device", "cpu_threads", "resume", "checkpoint_every", "compile", "tag",
                   "experiment_name"}
PERCENT_METRICS = {"test_acc", "val_acc", "test_acc_final", "val_acc_final", "train_acc_final"}
BUILTIN_REFERENCES = Path(__file__).with_name("references.yaml")
FORMATS = ("md", "csv", "latex")
SUFFIX = {"md": ".md", "csv": ".csv", "latex": ".tex"}


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metric:
    """What a cell summarises: `name` as shown, read from result key `key`."""

    name: str
    key: str
    percent: bool
    complement: bool  # value = 100 − 100·key (error rates from accuracies)
    higher_is_better: bool

    @property
    def unit(self) -> str:
        return " (%)" if self.percent else ""

    @property
    def best_word(self) -> str:
        return "max" if self.higher_is_better else "min"

    def value(self, r: dict[str, Any]) -> float | None:
        v = r.get(self.key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        if self.complement:
            return 100.0 - 100.0 * v
        return 100.0 * v if self.percent else float(v)


def parse_metric(name: str, best: str = "auto") -> Metric:
    err = "_err" in name
    key = name.replace("_err", "_acc", 1) if err else name
    percent = err or key in PERCENT_METRICS or key.endswith("_acc") or "_acc_" in key
    if best == "auto":
        # Loss terms recorded from training (train_sup_final, train_vat_final, ...) are better lower.
        lower = err or any(w in name for w in ("loss", "time")) or name.endswith(("_ms", "_s")) \
            or (name.startswith("train_") and not percent)
        higher = not lower
    else:
        higher = best == "max"
    return Metric(name, key, percent, err, higher)


# --------------------------------------------------------------------------- results


def load_results(dirs: list[Path]) -> list[dict[str, Any]]:
    results = []
    for d in dirs:
        if not d.exists():
            raise GenexpError(f"{d} does not exist: pass run or sweep directories (default outputs/)")
        if not d.is_dir():
            raise GenexpError(f"{d} is not a directory: pass run or sweep directories (default outputs/)")
        for path in sorted(d.rglob("result.json")):
            try:
                r = json.loads(path.read_text())
                if not isinstance(r, dict):
                    raise ValueError("not a JSON object")
                results.append(r | {"_path": str(path.parent), "_config": _flat_config(path.parent / "config.yaml")})
            except (OSError, ValueError):
                results.append({"status": "unreadable", "_path": str(path.parent)})
    return results


def _flatten(node: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(node, dict) and node:
        for k, v in node.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = node if isinstance(node, str) else json.dumps(node)


def _flat_config(path: Path) -> dict[str, str]:
    """The run's resolved config.yaml as dotted keys (optim.lr, method.eps, dataset.path): {} if none."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    out: dict[str, str] = {}
    if isinstance(data, dict):
        _flatten(data, "", out)
    return out


def field_value(r: dict[str, Any], key: str) -> str:
    """A run's value for a table key: a result.json key, else any resolved config key."""
    if key in r and not key.startswith("_"):
        return str(r[key])
    return (r.get("_config") or {}).get(key, "?")


def has_key(r: dict[str, Any], key: str) -> bool:
    return (key in r and not key.startswith("_")) or key in (r.get("_config") or {})


def differing_keys(results: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """Keys (beyond `keys` and the seed) in which runs grouped into one cell by `keys` differ.

    Adding them to the keys leaves every cell with runs that agree on everything but the seed.
    A group's `name` key is reported as the group (method.name -> method) and, when the group
    differs, its other keys are left to the regrouped pass.
    """
    readable = [r for r in results if r.get("status") != "unreadable"]
    extra: list[str] = []
    for pass_ in ("identity", "config"):
        cells: dict[tuple, list[dict]] = defaultdict(list)
        for r in readable:
            cells[tuple(field_value(r, k) for k in keys + extra)].append(r)
        found: set[str] = set()
        for runs in cells.values():
            if len(runs) < 2:
                continue
            if pass_ == "identity":
                candidates = set(IDENTITY_KEYS)
            else:
                candidates = {k for r in runs if r.get("_config") for k in r["_config"]}
            for k in candidates - set(keys) - set(extra) - HOW_TO_RUN_KEYS:
                if k.endswith(".name") and k[:-5] in IDENTITY_KEYS:
                    k = k[:-5]
                    if k in keys or k in extra:
                        continue
                values = {field_value(r, k) for r in runs if pass_ == "identity" and k in r or
                          pass_ == "config" and r.get("_config")}
                if len(values) > 1:
                    found.add(k)
        extra += sorted(found, key=lambda k: (k.count("."), k))
    return extra


def _sort_key(v: str) -> tuple:
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)


def _method_first(key: tuple[str, ...], names: list[str]) -> tuple:
    # The baseline (method=none) leads; everything else in natural order.
    return tuple((0 if (k == "method" and v == "none") else 1, _sort_key(v)) for k, v in zip(names, key))


@dataclass
class Cell:
    """All runs of one group."""

    values: list[float] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    failed: int = 0
    incomplete: int = 0  # running, killed before the end, or result.json unreadable
    missing: int = 0  # completed, but without the metric

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def add(self, r: dict[str, Any], metric: Metric) -> None:
        status = r.get("status")
        if status == "completed":
            v = metric.value(r)
            if v is None:
                self.missing += 1
            else:
                self.values.append(v)
                self.seeds.append(str(r.get("seed")))
        elif status == "failed":
            self.failed += 1
        else:
            self.incomplete += 1

    def stat(self, precision: int) -> str:
        if self.mean is None:
            return "—"
        if self.std is None:
            return f"{self.mean:.{precision}f}"
        return f"{self.mean:.{precision}f} ± {self.std:.{precision}f}"

    def notes(self, metric: Metric, with_n: bool = True) -> str:
        parts = [f"n={self.n}"] if with_n else []
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.incomplete:
            parts.append(f"{self.incomplete} incomplete")
        if self.missing:
            parts.append(f"{self.missing} without {metric.key}")
        return ", ".join(parts)

    def text(self, metric: Metric, precision: int) -> str:
        return f"{self.stat(precision)} ({self.notes(metric)})"


def group(results: list[dict[str, Any]], keys: list[str], metric: Metric) -> dict[tuple[str, ...], Cell]:
    cells: dict[tuple[str, ...], Cell] = defaultdict(Cell)
    for r in results:
        cells[tuple(field_value(r, k) for k in keys)].add(r, metric)
    return dict(cells)


def summarise(results: list[dict[str, Any]], by: list[str], metric: str | Metric) -> list[dict[str, Any]]:
    """One row per group: n completed, failed/incomplete counts, mean and sample std (flat layout)."""
    m = parse_metric(metric) if isinstance(metric, str) else metric
    cells = group(results, by, m)
    rows = []
    for key in sorted(cells, key=lambda k: _method_first(k, by)):
        c = cells[key]
        rows.append({**dict(zip(by, key)), "n": c.n, "failed": c.failed, "incomplete": c.incomplete,
                     "missing": c.missing, "mean": c.mean, "std": c.std, "seeds": ",".join(sorted(set(c.seeds))),
                     "_cell": c})
    return rows


def check_inputs(results: list[dict[str, Any]], keys: list[str], metric: Metric) -> list[str]:
    """Raise on keys or a metric no run has; return warnings (pooled experiments, duplicate seeds)."""
    readable = [r for r in results if r.get("status") != "unreadable"]
    for k in keys:
        if readable and not any(has_key(r, k) for r in readable):
            known = sorted({k2 for r in readable for k2, v in r.items()
                            if not k2.startswith("_") and isinstance(v, (str, int)) and not isinstance(v, bool)})
            raise GenexpError(f"no run has the key {k!r}: group by some of {', '.join(known)}, or any key of "
                              f"the runs' config.yaml (optim.lr, method.eps, dataset.path, ...)")
    completed = [r for r in readable if r.get("status") == "completed"]
    if completed and not any(metric.value(r) is not None for r in completed):
        numeric = sorted({k for r in completed for k, v in r.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)})
        extra = " (or test_err, val_err)" if "test_acc" in numeric else ""
        raise GenexpError(f"no completed run has a numeric {metric.key!r}: use --metric with one of "
                          f"{', '.join(numeric)}{extra}")
    warnings = [f"unreadable result.json in {r['_path']} (counted as incomplete)"
                for r in results if r.get("status") == "unreadable"]
    for key, c in group(results, keys, metric).items():
        dup = sorted({s for s in c.seeds if c.seeds.count(s) > 1})
        if dup and dup != ["None"]:
            warnings.append(f"{'/'.join(key)}: several completed runs with seed {','.join(dup)} "
                            f"(all are counted)")
    return warnings


# --------------------------------------------------------------------------- references


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


@dataclass
class Reference:
    source: str
    short: str
    url: str
    metric: str
    values: dict[str, float]
    dataset: str = ""
    model: str = ""
    labels: str = ""
    setting: str = ""
    names: dict[str, str] = field(default_factory=dict)
    number: int = 0  # [n] in the table's source list
    genexp_dataset: list[str] = field(default_factory=list)  # genexp dataset names it is context for

    def for_datasets(self, datasets: set[str]) -> bool:
        """Whether the figure belongs beside runs on `datasets`: its `genexp_dataset` list, else its
        `dataset`, matched case- and punctuation-insensitively (MNIST ~ mnist, CIFAR-10 ~ cifar10).
        An entry that names no dataset is always shown."""
        names = self.genexp_dataset or ([self.dataset] if self.dataset else [])
        return not names or bool({_norm(n) for n in names} & {_norm(d) for d in datasets})

    def describe(self) -> str:
        return ", ".join(x for x in (self.dataset, self.model, f"{self.labels} labels" if self.labels else "") if x)

    def value_as(self, metric: Metric, method: str) -> tuple[float, str]:
        """The published number in the table's metric when convertible (acc ↔ err on the same split)."""
        v = self.values[method]
        if self.metric == metric.name:
            return v, metric.name
        ref_split = self.metric.replace("_err", "").replace("_acc", "")
        tab_split = metric.name.replace("_err", "").replace("_acc", "")
        one_is_err = ("_err" in self.metric) != ("_err" in metric.name)
        if metric.percent and ref_split == tab_split and one_is_err:
            return 100.0 - v, metric.name
        return v, self.metric


def load_references(path: Path) -> list[Reference]:
    import yaml

    if not path.is_file():
        raise GenexpError(f"--reference {path} does not exist: pass a YAML file of published figures "
                          f"(or --reference builtin for {BUILTIN_REFERENCES.name})")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise GenexpError(f"--reference {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    entries = data.get("references") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise GenexpError(f"--reference {path}: expected a list under 'references:' (see {BUILTIN_REFERENCES})")
    refs = []
    for i, e in enumerate(entries, 1):
        where = f"--reference {path}, entry {i}"
        if not isinstance(e, dict):
            raise GenexpError(f"{where}: expected a mapping with source, url, metric, values")
        for k in ("source", "url", "metric", "values"):
            if not e.get(k):
                raise GenexpError(f"{where}: missing '{k}' (every published figure needs its source and URL)")
        values = e["values"]
        if not isinstance(values, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values.values()):
            raise GenexpError(f"{where}: 'values' must map method names to numbers")
        refs.append(Reference(source=str(e["source"]), short=str(e.get("short") or e["source"][:40]),
                              url=str(e["url"]), metric=str(e["metric"]),
                              values={str(k): float(v) for k, v in values.items()},
                              dataset=str(e.get("dataset", "")), model=str(e.get("model", "")),
                              labels=str(e.get("labels", "")), setting=str(e.get("setting", "")),
                              names={str(k): str(v) for k, v in (e.get("names") or {}).items()}, number=i,
                              genexp_dataset=_as_list(e.get("genexp_dataset"))))
    return refs


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]


def resolve_reference(arg: str | None) -> Path | None:
    if arg is None:
        return None
    p = Path(arg)
    if arg in ("builtin", "default") and not p.exists():
        return BUILTIN_REFERENCES
    return p


# --------------------------------------------------------------------------- table model


@dataclass
class Row:
    label: list[str]  # one entry per label column
    cells: list[str]  # display text per value column
    bold: list[bool]
    published: bool = False


@dataclass
class Table:
    title: str
    caption: str
    label_headers: list[str]
    value_headers: list[str]
    rows: list[Row]
    sources: list[Reference]


def _best_flags(cells: list[Cell | None], higher: bool) -> list[bool]:
    means = [c.mean if c is not None else None for c in cells]
    present = [m for m in means if m is not None]
    if len(present) < 2:
        return [False] * len(cells)
    best = max(present) if higher else min(present)
    tol = 1e-9 * max(1.0, abs(best))
    return [m is not None and abs(m - best) <= tol for m in means]


def pivot_table(results: list[dict[str, Any]], rows: list[str], cols: list[str], metric: Metric,
                refs: list[Reference], precision: int) -> Table:
    """Rows × columns of cells; row keys constant over every run go to the caption."""
    readable = [r for r in results if r.get("status") != "unreadable"]
    constant = [k for k in rows if len({field_value(r, k) for r in readable}) == 1] if readable else []
    shown = [k for k in rows if k not in constant] or rows[-1:]
    constant = [k for k in constant if k not in shown]
    cells = group(results, shown + cols, metric)
    row_keys = sorted({k[:len(shown)] for k in cells}, key=lambda k: _method_first(k, shown))
    col_keys = {k[len(shown):] for k in cells}
    placeable = cols == ["labels"]
    if placeable:
        col_keys |= {(r.labels,) for r in refs if r.labels}
    col_keys_sorted = sorted(col_keys, key=lambda k: tuple(_sort_key(v) for v in k))

    grid = [[cells.get(rk + ck) for ck in col_keys_sorted] for rk in row_keys]
    bold_cols = [_best_flags([grid[i][j] for i in range(len(row_keys))], metric.higher_is_better)
                 for j in range(len(col_keys_sorted))]
    out_rows = []
    for i, rk in enumerate(row_keys):
        texts = [c.text(metric, precision) if c is not None else "" for c in grid[i]]
        out_rows.append(Row([" / ".join(rk)], texts, [bold_cols[j][i] for j in range(len(col_keys_sorted))]))
    for ref in refs:
        for method, _ in ref.values.items():
            value, as_metric = ref.value_as(metric, method)
            text = f"{value:.2f}" + ("" if as_metric == metric.name else f" ({as_metric})")
            texts = [text if placeable and ck == (ref.labels,) else "" for ck in col_keys_sorted]
            label = f"published [{ref.number}]: {method}" + (f" ({ref.dataset})" if ref.dataset else "")
            if not placeable:  # columns are not label counts: the number goes in the label
                label += f" = {text} at {ref.labels} labels"
            out_rows.append(Row([label], texts, [False] * len(texts), published=True))

    const_vals = [f"{k}={field_value(readable[0], k)}" for k in constant] if readable else []
    caption = "; ".join(filter(None, [
        f"rows: {' / '.join(shown)}, columns: {' / '.join(cols)}",
        "mean ± sample std over seeds (n = completed runs; failed/incomplete runs counted, not averaged)",
        f"bold = best per column ({metric.best_word})",
    ]))
    title = f"{metric.name}{metric.unit}" + (f" — {', '.join(const_vals)}" if const_vals else "")
    headers = [f"{ck[0]} labels" if cols == ["labels"] else ", ".join(f"{k}={v}" for k, v in zip(cols, ck))
               for ck in col_keys_sorted]
    return Table(title, caption, [" / ".join(shown)], headers, out_rows, refs)


def flat_table(results: list[dict[str, Any]], by: list[str], metric: Metric, refs: list[Reference],
               precision: int) -> Table:
    rows = summarise(results, by, metric)
    # Bold: best among groups that differ only in the method (all groups if method is not a key).
    others = [k for k in by if k != "method"] if "method" in by else []
    families: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        families[tuple(r[k] for k in others)].append(i)
    bold = [False] * len(rows)
    for idx in families.values():
        for i, b in zip(idx, _best_flags([rows[i]["_cell"] for i in idx], metric.higher_is_better)):
            bold[i] = b
    out = []
    for r, b in zip(rows, bold):
        c: Cell = r["_cell"]
        failed = str(c.failed) + (f" (+{c.incomplete} incomplete)" if c.incomplete else "") + (
            f" (+{c.missing} without {metric.key})" if c.missing else "")
        out.append(Row([r[k] for k in by], [c.stat(precision), str(c.n), failed], [b, False, False]))
    for ref in refs:
        for method in ref.values:
            value, as_metric = ref.value_as(metric, method)
            fields = {"dataset": ref.dataset, "model": ref.model, "method": method, "labels": ref.labels}
            label = [fields.get(k) or "—" for k in by]
            text = f"published [{ref.number}]: {value:.2f}" + ("" if as_metric == metric.name else f" {as_metric}")
            if ref.dataset and "dataset" not in by:
                text += f" ({ref.dataset})"
            out.append(Row(label, [text, "—", "—"], [False] * 3, published=True))
    caption = (f"mean ± sample std over seeds; bold = best ({metric.best_word}) "
               + ("among methods with the same other keys" if others else "overall"))
    return Table(f"{metric.name}{metric.unit}", caption, list(by),
                 [f"{metric.name} (mean ± std)", "n", "failed"], out, refs)


# --------------------------------------------------------------------------- renderers


def _source_lines(refs: list[Reference]) -> list[str]:
    return [f"[{r.number}] {r.source}. {r.url} — {r.describe()}" + (f"; {r.setting}" if r.setting else "")
            + f" ({r.metric}, %)" for r in refs]


def to_markdown_table(t: Table) -> str:
    head = [*t.label_headers, *t.value_headers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in t.rows:
        cells = [f"**{c}**" if b and c else c for c, b in zip(row.cells, row.bold)]
        label = [f"*{x}*" if row.published else x for x in row.label]
        lines.append("| " + " | ".join([*label, *cells]) + " |")
    return "\n".join(lines) + "\n"


def to_markdown(tables: list[Table], n_runs: int) -> str:
    parts = []
    for i, t in enumerate(tables):
        parts.append(("# " if i == 0 else "## ") + (t.title if i == 0 else f"All groups: {t.title}") + "\n")
        parts.append(f"{t.caption}. {n_runs} runs.\n" if i == 0 else f"{t.caption}.\n")
        parts.append(to_markdown_table(t))
    refs = tables[0].sources if tables else []
    if refs:
        parts.append("## Published figures (other datasets and budgets unless stated: context, not targets)\n")
        parts.append("\n".join(f"- {line}" for line in _source_lines(refs)) + "\n")
    return "\n".join(parts)


def to_csv(rows: list[dict[str, Any]], by: list[str], metric: Metric | None = None,
           refs: Iterable[Reference] = ()) -> str:
    """Tidy CSV, one line per group (and per published figure): machine-readable, unrounded."""
    buf = io.StringIO()
    fields = [*by, "mean", "std", "n", "failed", "incomplete", "seeds", "missing", "metric", "kind", "source", "url"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    name = metric.name if metric is not None else ""
    for r in rows:
        writer.writerow({**r, "metric": name, "kind": "genexp"})
    for ref in refs:
        for method in ref.values:
            value, as_metric = ref.value_as(metric, method) if metric is not None else (ref.values[method], ref.metric)
            base = {"dataset": ref.dataset, "model": ref.model, "method": method, "labels": ref.labels}
            writer.writerow({**{k: base.get(k, "") for k in by}, "mean": value, "metric": as_metric,
                             "kind": "published", "source": ref.source, "url": ref.url})
    return buf.getvalue()


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---",
                 "–": "--", "±": r"$\pm$", "×": r"$\times$"}


def latex_escape(s: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in s)


def _latex_cell(text: str, bold: bool) -> str:
    if not text:
        return ""
    stat, sep, notes = text.partition(" (")
    if "±" in stat or stat.replace(".", "", 1).lstrip("-").isdigit():
        body = stat.replace(" ± ", r" \pm ")
        out = rf"$\mathbf{{{body}}}$" if bold else f"${body}$"
    else:
        out = latex_escape(stat)
    if sep:
        out += r" {\scriptsize (" + latex_escape(notes) + "}"
    return out


def to_latex(t: Table) -> str:
    ncols = len(t.label_headers) + len(t.value_headers)
    spec = "l" * len(t.label_headers) + "r" * len(t.value_headers)
    lines = ["% generated by genexp table; needs \\usepackage{booktabs}",
             *[f"% {s}" for s in _source_lines(t.sources)],
             r"\begin{table}[t]", r"\centering", r"\small",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in [*t.label_headers, *t.value_headers]) + r" \\", r"\midrule"]
    published_started = False
    for row in t.rows:
        if row.published and not published_started:
            lines.append(r"\midrule")
            published_started = True
        label = [latex_escape(x) for x in row.label]
        if row.published:
            label = [rf"\textit{{{x}}}" for x in label]
        cells = [_latex_cell(c, b) for c, b in zip(row.cells, row.bold)]
        lines.append(" & ".join([*label, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    caption = f"{t.title}. {t.caption}."
    if t.sources:
        caption += " Published: " + "; ".join(f"[{r.number}] {r.short}" for r in t.sources) + "."
    lines += [rf"\caption{{{latex_escape(caption)}}}", r"\end{table}"]
    assert all(line.count("&") == ncols - 1 for line in lines if line.endswith(r"\\")), "latex column count"
    return "\n".join(lines) + "\n"


def print_rich(tables: list[Table], n_runs: int) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable

    console = Console()
    for i, t in enumerate(tables):
        rt = RichTable(title=escape(f"{t.title}, mean ± std over seeds ({n_runs} runs)"),
                       caption=escape(t.caption))
        for h in t.label_headers:
            rt.add_column(escape(h))
        for h in t.value_headers:
            rt.add_column(escape(h), justify="right")
        published_started = False
        for row in t.rows:
            if row.published and not published_started:
                rt.add_section()
                published_started = True
            cells = []
            for c, b in zip(row.cells, row.bold):
                text = escape(c)
                if " failed" in c or " incomplete" in c or "without" in c:
                    text = text.replace("failed", "[red]failed[/red]")
                    text = text.replace("incomplete", "[yellow]incomplete[/yellow]")
                cells.append(f"[bold green]{text}[/bold green]" if b else text)
            label = [f"[italic cyan]{escape(x)}[/italic cyan]" if row.published else escape(x) for x in row.label]
            rt.add_row(*label, *cells)
        console.print(rt)
    refs = tables[0].sources if tables else []
    for line in _source_lines(refs):
        console.print(escape(line), style="cyan", soft_wrap=True)


# --------------------------------------------------------------------------- CLI


def _keys(s: str) -> list[str]:
    return [k.strip() for k in s.split(",") if k.strip()]


def _formats(s: str) -> list[str]:
    fmts = []
    for f in _keys(s.lower()):
        if f == "all":
            fmts += list(FORMATS)
        elif f in ("tex",):
            fmts.append("latex")
        elif f in FORMATS:
            fmts.append(f)
        else:
            raise GenexpError(f"--format {f!r} is not one of md, csv, latex, all")
    return list(dict.fromkeys(fmts))


def _out_prefix(out: Path | None, first_dir: Path) -> Path:
    if out is None:
        return first_dir / "table"
    if out.suffix in (".md", ".csv", ".tex"):
        return out.with_suffix("")
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="genexp table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="*", type=Path, default=[Path("outputs")], help="run/sweep dirs (default outputs/)")
    p.add_argument("--metric", default="test_acc",
                   help="test_acc (default: test accuracy at the best-val step), test_err, val_acc, val_err, "
                        "test_acc_final, or any numeric result key (step_time_ms, ...)")
    p.add_argument("--rows", default=None, help=f"pivot row keys (default {DEFAULT_ROWS})")
    p.add_argument("--cols", default=None, help=f"pivot column keys (default {DEFAULT_COLS})")
    p.add_argument("--by", default=None, help=f"flat-layout group keys (default {DEFAULT_BY})")
    p.add_argument("--layout", choices=("pivot", "flat", "both"), default=None,
                   help="default: both; flat when only --by is given, pivot when only --rows/--cols are")
    p.add_argument("--best", choices=("auto", "max", "min"), default="auto",
                   help="which cell is bold (auto: max for accuracies, min for errors, losses and times)")
    p.add_argument("--format", default="md,csv", help="comma list of md, csv, latex, or all (default md,csv)")
    p.add_argument("--out", type=Path, default=None,
                   help="output prefix: writes OUT.md, OUT.csv, OUT.tex (default: table.* in the first DIR)")
    p.add_argument("--reference", default=None, metavar="FILE.yaml",
                   help="published figures to show beside genexp's (each with its source); "
                        f"'builtin' = genexp/{BUILTIN_REFERENCES.name}")
    p.add_argument("--precision", type=int, default=2, help="decimals shown (default 2)")
    args = p.parse_args(argv)
    try:
        fmts = _formats(args.format)
        metric = parse_metric(args.metric, args.best)
        layout = args.layout or ("flat" if args.by and not (args.rows or args.cols)
                                 else "pivot" if (args.rows or args.cols) and not args.by else "both")
        by = _keys(args.by or DEFAULT_BY)
        rows, cols = _keys(args.rows or DEFAULT_ROWS), _keys(args.cols or DEFAULT_COLS)
        if not by or not rows or not cols:
            raise GenexpError("--by, --rows and --cols need at least one key each")
        if set(rows) & set(cols):
            raise GenexpError(f"--rows and --cols share {', '.join(sorted(set(rows) & set(cols)))}: "
                              f"a key is either a row or a column")
        refs = load_references(ref) if (ref := resolve_reference(args.reference)) else []
        results = load_results(args.dirs)
        split_warnings: list[str] = []
        if not results:
            raise GenexpError(f"no result.json under {', '.join(map(str, args.dirs))}: run genexp train first")
        # Published figures only beside runs on the datasets they are context for.
        datasets = {field_value(r, "dataset") for r in results if r.get("status") != "unreadable"}
        hidden = [r for r in refs if not r.for_datasets(datasets)]
        refs = [r for r in refs if r.for_datasets(datasets)]
        if hidden:
            print(f"note: {len(hidden)} published figure set(s) for other datasets not shown "
                  f"({', '.join(dict.fromkeys(r.dataset or r.short for r in hidden))}); a reference's "
                  f"genexp_dataset: list says which genexp datasets it belongs to", file=sys.stderr)
        # A cell holds only runs whose configs agree except for the seed: runs that differ in
        # another key get rows of their own, keyed by it.
        split_keys: list[str] = []
        for keys, grouped, shown in ((rows, rows + cols, layout != "flat"), (by, by, layout != "pivot")):
            split = differing_keys(results, grouped) if shown else []
            keys += split
            split_keys += [k for k in split if k not in split_keys]
        if split_keys:
            split_warnings.append(f"runs differ in {', '.join(split_keys)} (not only in seed): shown as separate "
                                  f"rows keyed by {'them' if len(split_keys) > 1 else 'it'} (--rows/--by choose "
                                  f"the keys; any config key works, e.g. optim.lr)")
        tidy_keys = by if layout != "pivot" else rows + cols
        used = tidy_keys + (rows + cols if layout == "both" else [])
        warnings = split_warnings + check_inputs(results, list(dict.fromkeys(used)), metric)
    except GenexpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in dict.fromkeys(warnings):
        print(f"warning: {w}", file=sys.stderr)

    tables = []
    if layout in ("pivot", "both"):
        tables.append(pivot_table(results, rows, cols, metric, refs, args.precision))
    if layout in ("flat", "both"):
        tables.append(flat_table(results, by, metric, refs if layout == "flat" else [], args.precision))
    print_rich(tables[:1] if layout == "both" else tables, len(results))

    prefix = _out_prefix(args.out, args.dirs[0])
    texts = {"md": lambda: to_markdown(tables, len(results)),
             "csv": lambda: to_csv(summarise(results, tidy_keys, metric), tidy_keys, metric, refs),
             "latex": lambda: to_latex(tables[0])}
    written = []
    for f in fmts:
        path = Path(str(prefix) + SUFFIX[f])
        atomic_write_text(path, texts[f]())
        written.append(str(path))
    print(f"wrote {', '.join(written)}")
    return 0
