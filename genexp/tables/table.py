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
Runs of several experiment presets (a parent of several sweeps) get a table each, titled by the
preset and the settings it holds (experiment=none_vs_vat, vat_eps=0.3); within one, rows are keyed
by the keys its runs differ in (a key that copies another, the method.eps vat_eps sets, once),
values at 3 significant digits. One run found twice (a copied dir, a rerun of one config and seed
elsewhere: the same run_id) is counted once.
Written as Markdown and CSV by default (--format md,csv,latex or all), atomically.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from genexp.errors import GenexpError
from genexp.runs.files import atomic_write_text
from genexp.tables.blocks import Block
from genexp.tables.blocks import split as split_blocks
from genexp.tables.cells import (
    Cell,
    Metric,
    check_keys,
    differing_keys,
    duplicate_seeds,
    field_value,
    group,
    load_results,
    parse_metric,
    summarise,
    unreadable_warnings,
    without_copies,
)
from genexp.tables.compare import CORRECTIONS, Baseline, Comparisons, compare, parse_correction
from genexp.tables.copies import drop_copies
from genexp.tables.references import BUILTIN_REFERENCES, Reference, load_references, resolve_reference
from genexp.tables.render import (
    CsvSection,
    Table,
    ValueTexts,
    flat_table,
    pivot_table,
    print_rich,
    to_csv,
    to_latex,
    to_markdown,
)
from genexp.tables.run import Run

# Re-exported: genexp.tables.plot and the tests import these from genexp.tables.table.
__all__ = ["BUILTIN_REFERENCES", "Cell", "Metric", "Reference", "Table", "check_keys", "differing_keys",
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
class Section:
    """One block's share of a `genexp table` call: its runs and the keys that group them."""

    block: Block
    rows: list[str]
    cols: list[str]
    by: list[str]
    tidy_keys: list[str]  # the CSV's group keys
    refs: list[Reference]
    comparisons: dict[tuple[str, ...], Comparisons] | None = None  # per grouping keys (pivot, flat)

    @property
    def results(self) -> list[Run]:
        return self.block.results


@dataclass
class Plan:
    """What one `genexp table` call shows: the runs, the metric, the layout, and a section per
    experiment preset among the runs (one when they share one)."""

    results: list[Run]
    metric: Metric
    layout: str  # pivot | flat | both
    sections: list[Section]
    refs: list[Reference]
    formats: list[str]
    warnings: list[str]
    notes: list[str]  # runs found twice, blocks without the --compare baseline


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


def _datasets(results: list[Run]) -> set[str]:
    return {field_value(r, "dataset") for r in results if r.readable}


def _references_for(refs: list[Reference], results: list[Run]) -> list[Reference]:
    """Published figures only beside runs on the datasets they are context for."""
    datasets = _datasets(results)
    hidden = [r for r in refs if not r.for_datasets(datasets)]
    if hidden:
        print(f"note: {len(hidden)} published figure set(s) for other datasets not shown "
              f"({', '.join(dict.fromkeys(r.dataset or r.short for r in hidden))}); a reference's "
              f"genexp_dataset: list says which genexp datasets it belongs to", file=sys.stderr)
    return [r for r in refs if r.for_datasets(datasets)]


def _split_differing(results: list[Run], layout: str, rows: list[str], cols: list[str],
                     by: list[str], where: str = "") -> list[str]:
    """Extend rows and by (in place) with the keys runs of one cell differ in; warnings."""
    # A cell holds only runs whose configs agree except for the seed: runs that differ in
    # another key get rows of their own, keyed by it (of keys that set each other, the one a user sets).
    split_keys: list[str] = []
    for keys, grouped, shown in ((rows, rows + cols, layout != "flat"), (by, by, layout != "pivot")):
        split = without_copies(results, differing_keys(results, grouped)) if shown else []
        keys += split
        split_keys += [k for k in split if k not in split_keys]
    if not split_keys:
        return []
    return [f"{where}runs differ in {', '.join(split_keys)} (not only in seed): shown as separate "
            f"rows keyed by {'them' if len(split_keys) > 1 else 'it'} (--rows/--by choose "
            f"the keys; any config key works, e.g. optim.lr)"]


def _compare(sections: list[Section], base: Baseline, metric: Metric, confidence: float,
             correction: str | None) -> list[str]:
    """Each section's comparisons (in place); a note per block without the baseline's runs. A
    baseline no block has is refused."""
    notes, errors = [], []
    for sec in sections:
        try:
            sec.comparisons = {tuple(keys): compare(sec.results, keys, metric, base, confidence, correction)
                               for keys in {tuple(sec.tidy_keys), tuple(sec.rows + sec.cols), tuple(sec.by)}}
        except GenexpError as e:
            errors.append(e)
            notes.append(f"{sec.block.title}: not compared ({e})")
    if len(errors) == len(sections):
        raise errors[0]
    return notes


def plan(args: argparse.Namespace) -> Plan:
    """Check the arguments and read the runs: GenexpError on anything a user must fix."""
    formats = _formats(args.format)
    metric = parse_metric(args.metric, args.best)
    layout, by, rows, cols = _layout(args)
    refs = load_references(ref) if (ref := resolve_reference(args.reference)) else []
    results = load_results(args.dirs)
    if not results:
        raise GenexpError(f"no result.json under {', '.join(map(str, args.dirs))}: run genexp train first")
    results, notes = drop_copies(results)
    refs = _references_for(refs, results)
    base = Baseline.parse(args.compare) if args.compare else None
    correction = parse_correction(args.correction)
    if correction is not None and base is None:
        raise GenexpError(f"--correction {correction} adjusts --compare's p-values: add --compare KEY=VALUE "
                          f"(e.g. --compare method=none)")
    check_keys(results, list(dict.fromkeys(rows + cols + by)), metric)
    chosen = set(rows + cols + by) | ({base.key} if base else set())
    blocks = split_blocks(results, chosen)
    sections, warnings = [], []
    for block in blocks:
        s_rows, s_cols, s_by = list(rows), list(cols), list(by)
        where = f"{block.title}: " if len(blocks) > 1 else ""
        warnings += _split_differing(block.results, layout, s_rows, s_cols, s_by, where)
        if base is not None:  # a row must say which side of the comparison it is on
            s_rows += [base.key] if base.key not in s_rows + s_cols else []
            s_by += [base.key] if base.key not in s_by else []
        tidy_keys = s_by if layout != "pivot" else s_rows + s_cols
        used = tidy_keys + (s_rows + s_cols if layout == "both" else [])
        warnings += [where + w for w in duplicate_seeds(block.results, list(dict.fromkeys(used)), metric)]
        block_refs = [r for r in refs if r.for_datasets(_datasets(block.results))]
        sections.append(Section(block, s_rows, s_cols, s_by, tidy_keys, block_refs))
    if base is not None:
        notes += _compare(sections, base, metric, args.confidence, correction)
    warnings = unreadable_warnings(results) + warnings
    return Plan(results, metric, layout, sections, refs, formats, warnings, notes)


def _comparisons(sec: Section, keys: list[str]) -> Comparisons | None:
    return sec.comparisons[tuple(keys)] if sec.comparisons else None


def tables_of(p: Plan, precision: int) -> list[list[Table]]:
    """Each section's tables: its pivot and/or its flat table."""
    blocks = []
    for sec in p.sections:
        tables = []
        if p.layout in ("pivot", "both"):
            tables.append(pivot_table(sec.results, sec.rows, sec.cols, p.metric, sec.refs, precision,
                                      _comparisons(sec, sec.rows + sec.cols), sec.block.name))
        if p.layout in ("flat", "both"):
            tables.append(flat_table(sec.results, sec.by, p.metric, sec.refs if p.layout == "flat" else [],
                                     precision, _comparisons(sec, sec.by), sec.block.name))
        blocks.append(tables)
    return blocks


def compare_notes(p: Plan) -> list[str]:
    """What --compare could not pair, and where there is no interval: said, never dropped; each row
    named as the tables name it (of the CSV's grouping: the pivot's and the flat table's are the same rows)."""
    notes = []
    for sec in p.sections:
        c = _comparisons(sec, sec.tidy_keys)
        if c is None:
            continue
        notes += c.messages(_row_namer(sec, f"{sec.block.title}: " if len(p.sections) > 1 else ""))
    return list(dict.fromkeys(notes))


def _row_namer(sec: Section, where: str) -> Callable[[tuple[str, ...]], str]:
    show = ValueTexts.of(sec.results, sec.tidy_keys)
    return lambda key: where + "/".join(show(k, v) for k, v in zip(sec.tidy_keys, key))


def write(p: Plan, blocks: list[list[Table]], prefix: Path) -> list[str]:
    """Write the tables in each format, atomically; the paths written."""
    counted = [(tables, len(sec.results)) for tables, sec in zip(blocks, p.sections)]
    csv_sections = [CsvSection(summarise(sec.results, sec.tidy_keys, p.metric), sec.tidy_keys,
                               _comparisons(sec, sec.tidy_keys), sec.block.experiment) for sec in p.sections]
    texts = {"md": lambda: to_markdown(counted, p.notes + compare_notes(p)),
             "csv": lambda: to_csv(csv_sections, p.metric, p.refs),
             "latex": lambda: "\n".join(to_latex(tables[0]) for tables in blocks)}
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
    for note in p.notes + compare_notes(p):
        print(f"note: {note}", file=sys.stderr)
    if len(p.sections) > 1:
        print(f"note: runs of {len(p.sections)} experiment presets: a table each, rows keyed by what each "
              f"sets (--rows/--by with experiment puts them in one)", file=sys.stderr)
    print_rich([(ts[:1] if p.layout == "both" else ts, len(sec.results)) for ts, sec in zip(tables, p.sections)])
    written = write(p, tables, _out_prefix(args.out, args.dirs))
    print(f"wrote {', '.join(written)}")
    return 0
