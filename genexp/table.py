"""`genexp table`: mean ± std over seeds of recorded runs, as a rich table, Markdown and CSV."""
from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from genexp.errors import GenexpError
from genexp.records import atomic_write_text

DEFAULT_BY = "dataset,model,method,labels"
PERCENT_METRICS = {"test_acc", "val_acc", "test_acc_final", "val_acc_final", "train_acc_final"}


def load_results(dirs: list[Path]) -> list[dict[str, Any]]:
    results = []
    for d in dirs:
        if not d.exists():
            raise GenexpError(f"{d} does not exist: pass run or sweep directories (default outputs/)")
        for path in sorted(d.rglob("result.json")):
            try:
                results.append(json.loads(path.read_text()) | {"_path": str(path.parent)})
            except (OSError, json.JSONDecodeError):
                results.append({"status": "unreadable", "_path": str(path.parent)})
    return results


def summarise(results: list[dict[str, Any]], by: list[str], metric: str) -> list[dict[str, Any]]:
    """One row per group: n completed, failed/running counts, mean and sample std of `metric`."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[tuple(str(r.get(k, "?")) for k in by)].append(r)
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    rows = []
    for key in sorted(groups, key=lambda k: tuple((0, int(v)) if v.isdigit() else (1, v) for v in k)):
        runs = groups[key]
        values = [scale * r[metric] for r in runs if r.get("status") == "completed" and r.get(metric) is not None]
        rows.append({**dict(zip(by, key)), "n": len(values),
                     "failed": sum(r.get("status") == "failed" for r in runs),
                     "incomplete": sum(r.get("status") not in ("completed", "failed") for r in runs),
                     "mean": statistics.fmean(values) if values else None,
                     "std": statistics.stdev(values) if len(values) > 1 else None,
                     "seeds": ",".join(sorted({str(r.get("seed")) for r in runs if r.get("status") == "completed"}))})
    return rows


def cell(row: dict[str, Any]) -> str:
    if row["mean"] is None:
        return "—"
    return f"{row['mean']:.2f} ± {row['std']:.2f}" if row["std"] is not None else f"{row['mean']:.2f}"


def to_markdown(rows: list[dict[str, Any]], by: list[str], metric: str) -> str:
    head = [*by, f"{metric} (mean ± std)", "n", "failed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        failed = str(r["failed"]) + (f" (+{r['incomplete']} incomplete)" if r["incomplete"] else "")
        lines.append("| " + " | ".join([*(r[k] for k in by), cell(r), str(r["n"]), failed]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]], by: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*by, "mean", "std", "n", "failed", "incomplete", "seeds"])
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r[k] for k in writer.fieldnames})
    return buf.getvalue()


def print_rich(rows: list[dict[str, Any]], by: list[str], metric: str, n_runs: int) -> None:
    from rich.console import Console
    from rich.table import Table

    unit = " (%)" if metric in PERCENT_METRICS else ""
    table = Table(title=f"{metric}{unit}, mean ± std over seeds ({n_runs} runs)")
    for k in by:
        table.add_column(k)
    table.add_column(f"{metric}{unit}", justify="right")
    table.add_column("n", justify="right")
    table.add_column("failed", justify="right")
    for r in rows:
        table.add_row(*(r[k] for k in by), cell(r), str(r["n"]),
                      f"[red]{r['failed']}[/red]" if r["failed"] else "0")
    Console().print(table)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="genexp table", description=__doc__)
    p.add_argument("dirs", nargs="*", type=Path, default=[Path("outputs")], help="run/sweep dirs (default outputs/)")
    p.add_argument("--by", default=DEFAULT_BY, help=f"comma-separated result keys to group by (default {DEFAULT_BY})")
    p.add_argument("--metric", default="test_acc", help="result key to summarise (default test_acc, at best val)")
    p.add_argument("--out", type=Path, default=None,
                   help="write OUT.md and OUT.csv (default: table.md/table.csv in the first DIR)")
    args = p.parse_args(argv)
    try:
        results = load_results(args.dirs)
        if not results:
            raise GenexpError(f"no result.json under {', '.join(map(str, args.dirs))}: run genexp train first")
        by = [k.strip() for k in args.by.split(",") if k.strip()]
        rows = summarise(results, by, args.metric)
    except GenexpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_rich(rows, by, args.metric, len(results))
    out = args.out if args.out is not None else args.dirs[0] / "table"
    atomic_write_text(out.with_suffix(".md"), to_markdown(rows, by, args.metric))
    atomic_write_text(out.with_suffix(".csv"), to_csv(rows, by))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")
    return 0
