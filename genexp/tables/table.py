"""`genexp table`: mean ± std over seeds of recorded runs, beside published figures.

Two layouts, both by default:
  pivot  rows = --rows (default dataset,model,method; keys constant over all runs move to the
         caption), columns = --cols (default labels); each cell "mean ± std (n=3, 1 failed)";
         the best cell of each column in bold (max for accuracies, min for errors).
         With --compare, Δ and its interval get columns of their own and bold marks only a
         resolved improvement over the baseline (--correction holm|bonferroni: adjusted p).
  flat   one line per --by group (default dataset,model,method,labels) with n and failed columns.
Giving only --by selects the flat layout, only --rows/--cols the pivot (or say --layout).

Failed and incomplete runs are never dropped: each cell says how many there were. The std is the
sample standard deviation (n − 1). test_err = 100 − test_acc (likewise val_err, *_err_final).
Written as Markdown and CSV by default (--format md,csv,latex or all), atomically.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genexp.errors import GenexpError
from genexp.runs.files import atomic_write_text
from genexp.runs.record import Status
from genexp.tables.cells import (
    Cell,
    Metric,
    check_inputs,
    differing_keys,
    field_value,
    group,
    load_results,
    parse_metric,
    summarise,
)
from genexp.tables.compare import CORRECTIONS, Baseline, Comparisons, compare, parse_correction
from genexp.tables.references import BUILTIN_REFERENCES, Reference, load_references, resolve_reference
from genexp.tables.render import Table, flat_table, pivot_table, print_rich, to_csv, to_latex, to_markdown

# Re-exported: genexp.tables.plot and the tests import these from genexp.tables.table.
__all__ = ["BUILTIN_REFERENCES", "Cell", "Metric", "Reference", "Table", "check_inputs", "differing_keys",
           "field_value", "flat_table", "group", "load_references", "load_results", "main", "parse_metric",
           "pivot_table", "summarise", "to_csv", "to_latex", "to_markdown"]

DEFAULT_BY = "dataset,model,method,labels"
DEFAULT_ROWS = "dataset,model,method"
DEFAULT_COLS = "labels"
FORMATS = ("md", "csv", "latex")
SUFFIX = {"md": ".md", "csv": ".csv", "latex": ".tex"}


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


def _out_prefix(out: Path | None, dirs: list[Path]) -> Path:
    if out is None and len(set(dirs)) > 1:
        # A table of several dirs is not any one dir's table: it goes beside them, named after them,
        # so it never overwrites the table of the first.
        parent = Path(os.path.commonpath([d.resolve() for d in dirs]))
        name = "+".join(safe_name(d.resolve().name, "dir") for d in dict.fromkeys(dirs))
        return parent / f"table_{name[:120]}"
    if out is None:
        return dirs[0] / "table"
    if out.suffix in (".md", ".csv", ".tex"):
        return out.with_suffix("")
    return out


def safe_name(s: Any, empty: str = "x") -> str:
    """`s` as a file-name part: runs of anything but letters, digits, `_`, `.`, `-` become `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s)).strip("_") or empty


def _parser() -> argparse.ArgumentParser:
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
                   help="output prefix: writes OUT.md, OUT.csv, OUT.tex (default: table.* in DIR; with several DIRs, "
                        "table_<DIR>+<DIR>.* in their common parent)")
    p.add_argument("--reference", default=None, metavar="FILE.yaml",
                   help="published figures to show beside genexp's (each with its source); "
                        f"'builtin' = genexp/tables/{BUILTIN_REFERENCES.name}")
    p.add_argument("--precision", type=int, default=2, help="decimals shown (default 2)")
    p.add_argument("--compare", default=None, metavar="KEY=VALUE",
                   help="paired difference of every other row from the baseline runs KEY=VALUE (e.g. method=none): "
                        "runs pair when their configs, seed and split agree in all but KEY; mean difference, "
                        "Student-t interval, pairs, verdict, and the pairs that would resolve it")
    p.add_argument("--confidence", type=float, default=0.95, help="level of --compare's intervals (default 0.95)")
    p.add_argument("--correction", default=None, metavar="|".join(CORRECTIONS),
                   help="with --compare: adjust the rows' paired-t p-values for their number (Holm or Bonferroni, "
                        "statsmodels); verdicts and bold use the adjusted p-value, intervals stay per row")
    return p


@dataclass
class Plan:
    """What one `genexp table` call shows: the runs, the metric, the layout and its keys."""

    results: list[dict[str, Any]]
    metric: Metric
    layout: str  # pivot | flat | both
    rows: list[str]
    cols: list[str]
    by: list[str]
    tidy_keys: list[str]  # the CSV's group keys
    refs: list[Reference]
    formats: list[str]
    warnings: list[str]
    comparisons: dict[tuple[str, ...], Comparisons] | None = None  # per grouping keys (pivot, flat)


def _layout(args: argparse.Namespace) -> tuple[str, list[str], list[str], list[str]]:
    layout = args.layout or ("flat" if args.by and not (args.rows or args.cols)
                             else "pivot" if (args.rows or args.cols) and not args.by else "both")
    by = _keys(args.by or DEFAULT_BY)
    rows, cols = _keys(args.rows or DEFAULT_ROWS), _keys(args.cols or DEFAULT_COLS)
    if not by or not rows or not cols:
        raise GenexpError("--by, --rows and --cols need at least one key each")
    if set(rows) & set(cols):
        raise GenexpError(f"--rows and --cols share {', '.join(sorted(set(rows) & set(cols)))}: "
                          f"a key is either a row or a column")
    return layout, by, rows, cols


def _references_for(refs: list[Reference], results: list[dict[str, Any]]) -> list[Reference]:
    """Published figures only beside runs on the datasets they are context for."""
    datasets = {field_value(r, "dataset") for r in results if r.get("status") != Status.UNREADABLE}
    hidden = [r for r in refs if not r.for_datasets(datasets)]
    if hidden:
        print(f"note: {len(hidden)} published figure set(s) for other datasets not shown "
              f"({', '.join(dict.fromkeys(r.dataset or r.short for r in hidden))}); a reference's "
              f"genexp_dataset: list says which genexp datasets it belongs to", file=sys.stderr)
    return [r for r in refs if r.for_datasets(datasets)]


def _split_differing(results: list[dict[str, Any]], layout: str, rows: list[str], cols: list[str],
                     by: list[str]) -> list[str]:
    """Extend rows and by (in place) with the keys runs of one cell differ in; warnings."""
    # A cell holds only runs whose configs agree except for the seed: runs that differ in
    # another key get rows of their own, keyed by it.
    split_keys: list[str] = []
    for keys, grouped, shown in ((rows, rows + cols, layout != "flat"), (by, by, layout != "pivot")):
        split = differing_keys(results, grouped) if shown else []
        keys += split
        split_keys += [k for k in split if k not in split_keys]
    if not split_keys:
        return []
    return [f"runs differ in {', '.join(split_keys)} (not only in seed): shown as separate "
            f"rows keyed by {'them' if len(split_keys) > 1 else 'it'} (--rows/--by choose "
            f"the keys; any config key works, e.g. optim.lr)"]


def plan(args: argparse.Namespace) -> Plan:
    """Check the arguments and read the runs: GenexpError on anything a user must fix."""
    formats = _formats(args.format)
    metric = parse_metric(args.metric, args.best)
    layout, by, rows, cols = _layout(args)
    refs = load_references(ref) if (ref := resolve_reference(args.reference)) else []
    results = load_results(args.dirs)
    if not results:
        raise GenexpError(f"no result.json under {', '.join(map(str, args.dirs))}: run genexp train first")
    refs = _references_for(refs, results)
    warnings = _split_differing(results, layout, rows, cols, by)
    base = Baseline.parse(args.compare) if args.compare else None
    correction = parse_correction(args.correction)
    if correction is not None and base is None:
        raise GenexpError(f"--correction {correction} adjusts --compare's p-values: add --compare KEY=VALUE "
                          f"(e.g. --compare method=none)")
    if base is not None:  # a row must say which side of the comparison it is on
        rows += [base.key] if base.key not in rows + cols else []
        by += [base.key] if base.key not in by else []
    tidy_keys = by if layout != "pivot" else rows + cols
    used = tidy_keys + (rows + cols if layout == "both" else [])
    warnings += check_inputs(results, list(dict.fromkeys(used)), metric)
    p = Plan(results, metric, layout, rows, cols, by, tidy_keys, refs, formats, warnings)
    if base is not None:
        p.comparisons = {tuple(keys): compare(results, keys, metric, base, args.confidence, correction)
                         for keys in {tuple(tidy_keys), tuple(rows + cols), tuple(by)}}
    return p


def _comparisons(p: Plan, keys: list[str]) -> Comparisons | None:
    return p.comparisons[tuple(keys)] if p.comparisons else None


def tables_of(p: Plan, precision: int) -> list[Table]:
    tables = []
    if p.layout in ("pivot", "both"):
        tables.append(pivot_table(p.results, p.rows, p.cols, p.metric, p.refs, precision,
                                  _comparisons(p, p.rows + p.cols)))
    if p.layout in ("flat", "both"):
        tables.append(flat_table(p.results, p.by, p.metric, p.refs if p.layout == "flat" else [], precision,
                                 _comparisons(p, p.by)))
    return tables


def compare_notes(p: Plan) -> list[str]:
    """What --compare could not pair, and where there is no interval: said, never dropped."""
    if not p.comparisons:
        return []
    return list(dict.fromkeys(m for c in p.comparisons.values() for m in c.messages()))


def write(p: Plan, tables: list[Table], prefix: Path) -> list[str]:
    """Write the tables in each format, atomically; the paths written."""
    texts = {"md": lambda: to_markdown(tables, len(p.results), compare_notes(p)),
             "csv": lambda: to_csv(summarise(p.results, p.tidy_keys, p.metric), p.tidy_keys, p.metric, p.refs,
                                   _comparisons(p, p.tidy_keys)),
             "latex": lambda: to_latex(tables[0])}
    written = []
    for f in p.formats:
        path = Path(str(prefix) + SUFFIX[f])
        atomic_write_text(path, texts[f]())
        written.append(str(path))
    return written


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        p = plan(args)
        tables = tables_of(p, args.precision)
    except GenexpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in dict.fromkeys(p.warnings):
        print(f"warning: {w}", file=sys.stderr)
    for note in compare_notes(p):
        print(f"note: {note}", file=sys.stderr)
    print_rich(tables[:1] if p.layout == "both" else tables, len(p.results))
    written = write(p, tables, _out_prefix(args.out, args.dirs))
    print(f"wrote {', '.join(written)}")
    return 0
