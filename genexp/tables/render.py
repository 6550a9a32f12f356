"""Rendering for `genexp table`: the pivot and flat layouts of the cells, as Markdown, CSV, LaTeX
and a rich console table."""
from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from genexp.tables.cells import UNSET, Cell, Metric, field_value, group, method_first, sort_key, summarise
from genexp.tables.compare import Comparisons
from genexp.tables.references import Reference
from genexp.tables.run import Run

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


SHORT_DIGITS = 3  # significant digits of a key's value in a row's name (a search's ε=0.7501954443620124)
NOT_SET = "—"  # a key the run does not have: none has no method.eps


def short_value(value: str, digits: int = SHORT_DIGITS) -> str:
    """A float's value at `digits` significant digits; any other value (50, auto, 1e-06, 8.0) as it is."""
    try:
        x = float(value)
    except ValueError:
        return value
    if not any(c in value for c in ".eE") or x != x or x in (float("inf"), float("-inf")):
        return value
    text = f"{x:.{digits}g}"
    return value if float(text) == x else text


@dataclass
class ValueTexts:
    """How each grouping key's values are shown: floats at 3 significant digits, or more where two
    values would otherwise read alike (0.3001 and 0.3004), a key a run lacks as "—"."""

    texts: dict[str, dict[str, str]]
    rounded: bool  # some value is shown rounded (the caption says so; the CSV has every digit)

    @classmethod
    def of(cls, results: list[Run], keys: Iterable[str]) -> "ValueTexts":
        texts: dict[str, dict[str, str]] = {}
        rounded = False
        for k in keys:
            raw = {field_value(r, k) for r in results if r.readable} - {UNSET}
            for digits in range(SHORT_DIGITS, 18):
                shown = {v: short_value(v, digits) for v in raw}
                if len(set(shown.values())) == len(raw):
                    break
            texts[k] = shown
            rounded = rounded or any(shown[v] != v for v in raw)
        return cls(texts, rounded)

    def __call__(self, key: str, value: str) -> str:
        if value == UNSET:
            return NOT_SET
        return self.texts.get(key, {}).get(value, value)


def _best_flags(cells: list[Cell | None], higher: bool) -> list[bool]:
    means = [c.mean if c is not None else None for c in cells]
    present = [m for m in means if m is not None]
    if len(present) < 2:
        return [False] * len(cells)
    best = max(present) if higher else min(present)
    tol = 1e-9 * max(1.0, abs(best))
    return [m is not None and abs(m - best) <= tol for m in means]


def minus(text: str) -> str:
    """Numbers shown to people get a real minus sign (U+2212), not a hyphen; the CSV keeps ASCII '-'."""
    return re.sub(r"(?<![\w.])-(?=\d)", "\u2212", text)


def _compare_headers(comparisons: Comparisons) -> list[str]:
    """A pivot's columns beside each value column: Δ, its interval (and the adjusted p-value)."""
    return ["Δ", f"{_level(comparisons)} interval"] + ([f"p ({comparisons.correction})"]
                                                       if comparisons.correction else [])


def _compare_cells(comparisons: Comparisons, key: tuple[str, ...], precision: int) -> tuple[list[str], list[bool]]:
    """A pivot cell's paired difference from the baseline, in columns of its own; bold = resolved improvement."""
    width = len(_compare_headers(comparisons))
    if key in comparisons.baseline_rows and key not in comparisons.rows:
        return ["baseline"] + [""] * (width - 1), [False] * width
    c = comparisons.rows.get(key)
    if c is None:
        return [""] * width, [False] * width
    s = c.summary(precision)
    texts = [s["delta"], s["ci"]] + ([s["p_adjusted"]] if comparisons.correction else [])
    better = c.verdict == "better"
    return [minus(t) for t in texts], [better, better] + [False] * (width - 2)


def pivot_table(results: list[Run], rows: list[str], cols: list[str], metric: Metric,
                refs: list[Reference], precision: int, comparisons: Comparisons | None = None,
                context: list[str] = ()) -> Table:
    """Rows × columns of cells; row keys constant over every run go to the title, after `context`
    (the block's name in a table of several experiments)."""
    readable = [r for r in results if r.readable]
    show = ValueTexts.of(results, rows + cols)
    constant = [k for k in rows if len({field_value(r, k) for r in readable}) == 1] if readable else []
    shown = [k for k in rows if k not in constant] or rows[-1:]
    constant = [k for k in constant if k not in shown]
    cells = group(results, shown + cols, metric)
    if comparisons is not None:  # its keys are rows + cols; the grid's drop the constant row keys
        comparisons = comparisons.project(rows + cols, shown + cols)
    row_keys = sorted({k[:len(shown)] for k in cells}, key=lambda k: method_first(k, shown))
    col_keys = {k[len(shown):] for k in cells}
    placeable = cols == ["labels"]
    if placeable:
        col_keys |= {(r.labels,) for r in refs if r.labels}
    col_keys_sorted = sorted(col_keys, key=lambda k: tuple(sort_key(v) for v in k))

    grid = [[cells.get(rk + ck) for ck in col_keys_sorted] for rk in row_keys]
    bold_cols = [_best_flags([grid[i][j] for i in range(len(row_keys))], metric.higher_is_better)
                 for j in range(len(col_keys_sorted))]
    extra = _compare_headers(comparisons) if comparisons is not None else []
    out_rows = []
    for i, rk in enumerate(row_keys):
        texts, bold = [], []
        for j, (c, ck) in enumerate(zip(grid[i], col_keys_sorted)):
            texts.append(minus(c.text(metric, precision)) if c is not None else "")
            bold.append(bold_cols[j][i] and comparisons is None)  # compared: bold is a resolved improvement
            if comparisons is not None:
                more, more_bold = _compare_cells(comparisons, rk + ck, precision)
                texts += more
                bold += more_bold
        out_rows.append(Row([" / ".join(show(k, v) for k, v in zip(shown, rk))], texts, bold))
    for ref in refs:
        for method, _ in ref.values.items():
            value, as_metric = ref.value_as(metric, method)
            text = f"{value:.2f}" + ("" if as_metric == metric.name else f" ({as_metric})")
            texts = [t for ck in col_keys_sorted
                     for t in [text if placeable and ck == (ref.labels,) else "", *[""] * len(extra)]]
            label = f"published [{ref.number}]: {method}" + (f" ({ref.dataset})" if ref.dataset else "")
            if not placeable:  # columns are not label counts: the number goes in the label
                label += f" = {text} at {ref.labels} labels"
            out_rows.append(Row([label], texts, [False] * len(texts), published=True))

    const_vals = [*context, *([f"{k}={show(k, field_value(readable[0], k))}" for k in constant] if readable else [])]
    caption = "; ".join(filter(None, [
        f"rows: {' / '.join(shown)}, columns: {' / '.join(cols)}",
        "mean ± sample std over seeds (n = completed runs; failed/incomplete runs counted, not averaged)",
        _rounded_note(show),
        f"bold = best per column ({metric.best_word})" if comparisons is None else "",
        comparisons and _compare_caption(comparisons),
    ]))
    title = f"{metric.name}{metric.unit}" + (f" — {', '.join(const_vals)}" if const_vals else "")
    headers = [h for ck in col_keys_sorted
               for h in [_labels_header(ck[0]) if cols == ["labels"]
                         else ", ".join(f"{k}={show(k, v)}" for k, v in zip(cols, ck)), *extra]]
    return Table(title, caption, [" / ".join(shown)], headers, out_rows, refs)


def _labels_header(value: str) -> str:
    # an unreadable result.json says nothing of its labels: its column must not read "? labels"
    return "labels not recorded" if value == UNSET else f"{value} labels"


def _rounded_note(show: ValueTexts) -> str:
    return (f"key values at {SHORT_DIGITS} significant digits, more where two would read alike (the CSV has every digit)"
            if show.rounded else "")


def _level(comparisons: Comparisons) -> str:
    return f"{100 * next(iter(comparisons.rows.values())).confidence:g} %" if comparisons.rows else "95 %"


def _compare_caption(comparisons: Comparisons) -> str:
    level = _level(comparisons)
    text = (f"Δ = paired difference from {comparisons.base} (same config, seed and split), mean over pairs "
            f"with its {level} Student-t interval; p = the two-sided paired t-test; bold = a resolved "
            f"improvement only (means are not bolded); 'pairs to resolve' = pairs at which this Δ, at this "
            f"spread of the differences, would exclude 0")
    if comparisons.correction:
        m = max((c.family_size for c in comparisons.rows.values()), default=0)
        alpha = 1 - next(iter(comparisons.rows.values())).confidence if comparisons.rows else 0.05
        text += (f"; p ({comparisons.correction}) = p adjusted by {comparisons.correction.capitalize()} over the "
                 f"{m} rows compared to {comparisons.base}, and the verdict and bold use it (resolved when it is "
                 f"below {alpha:g}); the intervals are each row's own {level} interval, not adjusted, so one "
                 f"may exclude 0 while its row is not resolved; pairs to resolve at the Bonferroni level "
                 f"{alpha:g}/{m} (enough for Holm too)")
    return text


def flat_table(results: list[Run], by: list[str], metric: Metric, refs: list[Reference],
               precision: int, comparisons: Comparisons | None = None, context: list[str] = ()) -> Table:
    rows = summarise(results, by, metric)
    groups = group(results, by, metric)
    cell_of = lambda r: groups[tuple(r[k] for k in by)]  # noqa: E731 (a row's Cell, kept beside the row)
    show = ValueTexts.of(results, by)
    # Bold: best among groups that differ only in the method (all groups if method is not a key).
    others = [k for k in by if k != "method"] if "method" in by else []
    families: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        families[tuple(r[k] for k in others)].append(i)
    bold = [False] * len(rows)
    for idx in families.values():
        for i, b in zip(idx, _best_flags([cell_of(rows[i]) for i in idx], metric.higher_is_better)):
            bold[i] = b
    headers = [f"{metric.name} (mean ± std)", "n", "failed"]
    if comparisons is not None:
        headers += [f"Δ vs {comparisons.base}", "interval", "pairs", "verdict", "pairs to resolve", "p"]
        headers += [f"p ({comparisons.correction})"] if comparisons.correction else []
    out = []
    for r, b in zip(rows, bold):
        c: Cell = cell_of(r)
        failed = str(c.failed) + (f" (+{c.incomplete} incomplete)" if c.incomplete else "") + (
            f" (+{c.missing} without {metric.key})" if c.missing else "")
        cells = [minus(c.stat(precision)), str(c.n), failed]
        flags = [b and comparisons is None] + [False] * 2  # compared: bold is a resolved improvement
        if comparisons is not None:
            key = tuple(r[k] for k in by)
            comp = comparisons.rows.get(key)
            s = comp.summary(precision) if comp is not None else {}
            base = "baseline" if key in comparisons.baseline_rows and comp is None else "—"
            cells += [minus(s.get("delta", base)), minus(s.get("ci", "—")), s.get("pairs", "—"),
                      s.get("verdict", "—"), s.get("needed", "—"), s.get("p", "—")]
            cells += [s.get("p_adjusted", "—")] if comparisons.correction else []
            better = comp is not None and comp.verdict == "better"
            flags += [better, better] + [False] * (len(cells) - 5)
        out.append(Row([show(k, r[k]) for k in by], cells, flags))
    for ref in refs:
        for method in ref.values:
            value, as_metric = ref.value_as(metric, method)
            fields = {"dataset": ref.dataset, "model": ref.model, "method": method, "labels": ref.labels}
            label = [fields.get(k) or "—" for k in by]
            text = f"published [{ref.number}]: {value:.2f}" + ("" if as_metric == metric.name else f" {as_metric}")
            if ref.dataset and "dataset" not in by:
                text += f" ({ref.dataset})"
            width = len(headers)
            out.append(Row(label, [text] + ["—"] * (width - 1), [False] * width, published=True))
    caption = "mean ± sample std over seeds"
    if comparisons is None:
        caption += f"; bold = best ({metric.best_word}) " + ("among methods with the same other keys" if others
                                                              else "overall")
    else:
        caption += "; " + _compare_caption(comparisons)
    if show.rounded:
        caption += "; " + _rounded_note(show)
    title = f"{metric.name}{metric.unit}" + (f" — {', '.join(context)}" if context else "")
    return Table(title, caption, list(by), headers, out, refs)


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


def to_markdown(blocks: list[tuple[list[Table], int]], notes: list[str] = ()) -> str:
    """Each block's tables (its pivot and/or flat table) with its number of runs; then the notes and
    the published figures' sources, once."""
    parts = []
    for tables, n_runs in blocks:
        for i, t in enumerate(tables):
            parts.append(("# " if i == 0 else "## ") + (t.title if i == 0 else f"All groups: {t.title}") + "\n")
            parts.append(f"{t.caption}. {n_runs} runs.\n" if i == 0 else f"{t.caption}.\n")
            parts.append(to_markdown_table(t))
    if notes:
        parts.append("Notes:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    refs = _sources(blocks)
    if refs:
        parts.append("## Published figures (other datasets and budgets unless stated: context, not targets)\n")
        parts.append("\n".join(f"- {line}" for line in _source_lines(refs)) + "\n")
    return "\n".join(parts)


def _sources(blocks: list[tuple[list[Table], int]]) -> list[Reference]:
    return list({id(r): r for tables, _ in blocks for t in tables[:1] for r in t.sources}.values())


COMPARE_FIELDS = ["baseline", "delta", "ci_low", "ci_high", "n_pairs", "confidence", "sd_diff", "verdict",
                  "pairs_needed", "unpaired", "welch_delta", "welch_low", "welch_high", "p_value", "p_adjusted",
                  "correction"]


@dataclass
class CsvSection:
    """One block's groups for the tidy CSV: summarise's rows, their keys, the block's comparisons."""

    rows: list[dict[str, Any]]
    by: list[str]
    comparisons: Comparisons | None = None
    experiment: str = ""  # the block's name in a table of several experiments


def to_csv(sections: list[CsvSection], metric: Metric | None = None, refs: Iterable[Reference] = ()) -> str:
    """Tidy CSV, one line per group (and per published figure): machine-readable, unrounded. The
    keys of every section are columns; a section without one leaves it empty; with several
    sections (experiments) an `experiment` column says whose a line is."""
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for sec in sections for k in sec.by))
    lead = ["experiment"] if len(sections) > 1 else []
    fields = [*lead, *keys, "mean", "std", "n", "failed", "incomplete", "seeds", "missing", "metric", "kind",
              "source", "url"]
    if any(sec.comparisons is not None for sec in sections):
        fields += COMPARE_FIELDS
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    name = metric.name if metric is not None else ""
    for sec in sections:
        for r in sec.rows:
            row = _with_comparison(r, sec.by, sec.comparisons) if sec.comparisons is not None else r
            unset = {k: "" for k in sec.by if row[k] == UNSET}
            writer.writerow({**row, **unset, "experiment": sec.experiment, "metric": name, "kind": "genexp"})
    for ref in refs:
        for method in ref.values:
            value, as_metric = ref.value_as(metric, method) if metric is not None else (ref.values[method], ref.metric)
            base = {"dataset": ref.dataset, "model": ref.model, "method": method, "labels": ref.labels}
            writer.writerow({**{k: base.get(k, "") for k in keys}, "mean": value, "metric": as_metric,
                             "kind": "published", "source": ref.source, "url": ref.url})
    return buf.getvalue()


def _with_comparison(row: dict[str, Any], by: list[str], comparisons: Comparisons) -> dict[str, Any]:
    key = tuple(row[k] for k in by)
    c = comparisons.rows.get(key)
    if c is not None:
        return {**row, "baseline": str(comparisons.base), **c.csv_fields()}
    return {**row, "baseline": "self" if key in comparisons.baseline_rows else ""}


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---",
                 "–": "--", "±": r"$\pm$", "×": r"$\times$", "Δ": r"$\Delta$", "\u2212": "$-$",
                 "α": r"$\alpha$", "<": "$<$", ">": "$>$"}
_NUMBER = r"[+\u2212-]?\d+(?:\.\d+)?"
# A cell that is a number, mean ± std, p-value or interval: set in math mode, where '-' is a minus sign.
_MATH_CELL = re.compile(rf"<?{_NUMBER}(?: ± {_NUMBER})?|\[{_NUMBER}, {_NUMBER}\]")


def latex_escape(s: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in s)


def _latex_cell(text: str, bold: bool) -> str:
    if not text:
        return ""
    stat, sep, notes = text.partition(" (")
    if _MATH_CELL.fullmatch(stat):
        body = stat.replace("\u2212", "-").replace(" ± ", r" \pm ")
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


def print_rich(blocks: list[tuple[list[Table], int]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable

    console = Console()
    for t, n_runs in ((t, n) for tables, n in blocks for t in tables):
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
    for line in _source_lines(_sources(blocks)):
        console.print(escape(line), style="cyan", soft_wrap=True)
