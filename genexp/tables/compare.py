"""`genexp table --compare KEY=VALUE`: paired differences from a baseline, with confidence intervals.

A run pairs with the baseline run whose result-affecting config is the same in every key but the
compared one (and the compared group's own keys: `--compare method=none` ignores `method.*`, since
`none` has no `eps`). Seed and split seed are part of that config, so a pair shares its
initialisation and its labelled set, and the paired difference cancels both (Bouthillier et al.
2021). The interval is Student's t on the per-pair differences (scipy.stats.ttest_rel), and the
p-value is the same two-sided paired t-test's. With several rows against one baseline,
`--correction holm|bonferroni` adjusts the p-values over the rows that have one
(statsmodels.stats.multitest.multipletests) and the verdict then uses the adjusted p-value; each
row's interval stays its own per-row Student-t interval.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from genexp.errors import GenexpError
from genexp.runs.record import Status
from genexp.tables.cells import HOW_TO_RUN_KEYS, IDENTITY_KEYS, Metric, field_value, has_key
from genexp.tables.run import Run

# Result.json fields that say what a run is (beyond its config.yaml), and so must agree within a pair.
PAIR_RESULT_KEYS = (*IDENTITY_KEYS, "seed", "split_seed", "experiment")
# How a run ran, not what it computed; the seed is not among them: pairs must share it.
NOT_PAIRED_ON = HOW_TO_RUN_KEYS - {"seed"}
MAX_PAIRS_SHOWN = 10_000  # "pairs to resolve" above this reads as "not within reach"
CORRECTIONS = ("holm", "bonferroni")  # --correction's choices (statsmodels' method names), besides none


def parse_correction(text: str | None) -> str | None:
    """--correction's value: holm, bonferroni, or None for none; GenexpError on anything else."""
    if text is None or text.strip().lower() in ("", "none"):
        return None
    if text.strip().lower() not in CORRECTIONS:
        raise GenexpError(f"--correction {text!r} is not one of {', '.join(CORRECTIONS)}, none")
    return text.strip().lower()


@dataclass(frozen=True)
class Baseline:
    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> "Baseline":
        key, sep, value = text.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise GenexpError(f"--compare {text!r} is not KEY=VALUE: say which runs are the baseline, "
                              f"e.g. --compare method=none")
        return cls(key.strip(), value.strip())

    def ignores(self, key: str) -> bool:
        """Keys that may differ within a pair: the compared key and its group's keys."""
        return key == self.key or key.startswith(self.key + ".") or key in NOT_PAIRED_ON

    def holds(self, r: Run) -> bool:
        return field_value(r, self.key) == self.value

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


def pair_key(r: Run, base: Baseline) -> tuple:
    """Everything that must agree for two runs to be a pair: the resolved config, data and seed."""
    items = {k: v for k, v in r.config.items() if not base.ignores(k)}
    for k in (*PAIR_RESULT_KEYS, "data_fingerprint"):
        if r.has(k) and not base.ignores(k):
            items[f"result:{k}"] = str(r.get(k))
    return tuple(sorted(items.items()))


@dataclass
class Comparison:
    """One row's runs against their baseline partners."""

    pairs: list[tuple[float, float]] = field(default_factory=list)  # (this row's run, its baseline partner)
    unpaired: list[str] = field(default_factory=list)  # run dirs with no (or no unique) partner
    row_values: list[float] = field(default_factory=list)  # every run of the row, paired or not (Welch)
    base_values: list[float] = field(default_factory=list)  # the baseline row's runs (Welch)
    confidence: float = 0.95
    higher_is_better: bool = True
    correction: str | None = None  # holm | bonferroni: set with p_adjusted by adjust()
    p_adjusted: float | None = None  # this row's p-value adjusted over the rows compared to the baseline
    family_size: int = 1  # rows with a p-value among which it was adjusted

    @property
    def diffs(self) -> list[float]:
        return [a - b for a, b in self.pairs]

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def delta(self) -> float | None:
        return statistics.fmean(self.diffs) if self.pairs else None

    @property
    def sd(self) -> float | None:
        """The sample standard deviation of the differences."""
        return statistics.stdev(self.diffs) if self.n_pairs > 1 else None

    @property
    def interval(self) -> tuple[float, float] | None:
        if self.n_pairs < 2:
            return None
        from scipy import stats

        if self.sd == 0:  # every pair differs by the same amount: t is undefined, the interval is a point
            return (self.delta, self.delta)
        mine, theirs = zip(*self.pairs)
        ci = stats.ttest_rel(mine, theirs).confidence_interval(self.confidence)
        return (float(ci.low), float(ci.high))

    @property
    def p_value(self) -> float | None:
        """The two-sided paired t-test's p-value (the test the interval inverts); None below two pairs."""
        if self.n_pairs < 2:
            return None
        if self.sd == 0:  # the point interval: resolved exactly when there is a difference
            return 0.0 if self.delta else 1.0
        from scipy import stats

        mine, theirs = zip(*self.pairs)
        return float(stats.ttest_rel(mine, theirs).pvalue)

    @property
    def alpha(self) -> float:
        return 1 - self.confidence

    @property
    def welch(self) -> tuple[float, float, float] | None:
        """With no pairs: Welch's unpaired difference and interval (mean, low, high), if computable."""
        if self.n_pairs or len(self.row_values) < 2 or len(self.base_values) < 2:
            return None
        from scipy import stats

        res = stats.ttest_ind(self.row_values, self.base_values, equal_var=False)
        ci = res.confidence_interval(self.confidence)
        mean = statistics.fmean(self.row_values) - statistics.fmean(self.base_values)
        if not (math.isfinite(ci.low) and math.isfinite(ci.high)):
            return None
        return (mean, float(ci.low), float(ci.high))

    @property
    def verdict(self) -> str:
        if self.n_pairs == 0:
            return "no pairs"
        if self.n_pairs == 1:
            return "one pair: no interval"
        if self.correction is not None and self.p_adjusted is not None:
            if self.p_adjusted >= self.alpha:
                return "not resolved"
            return "better" if (self.delta > 0) == self.higher_is_better else "worse"
        low, high = self.interval
        if low > 0 or high < 0:
            return "better" if (low > 0) == self.higher_is_better else "worse"
        return "not resolved"

    @property
    def pairs_needed(self) -> int | None:
        """Pairs at which this mean difference, at this spread of differences, would be resolved.

        The smallest n with t_{n−1}·sd/√n < |Δ|; None when that cannot be said (fewer than two
        pairs, or no difference at all). Under a correction, t at the Bonferroni level α/m over the
        m adjusted rows: enough for Bonferroni, and for Holm, which never rejects less.
        """
        if self.n_pairs < 2 or not self.delta:
            return None
        if self.sd == 0:
            return 2
        from scipy import stats

        n = np.arange(2, MAX_PAIRS_SHOWN + 1)
        alpha = self.alpha / (self.family_size if self.correction else 1)
        half = stats.t.ppf(1 - alpha / 2, n - 1) * self.sd / np.sqrt(n)  # every n in one call
        resolved = np.flatnonzero(half < abs(self.delta))
        return int(n[resolved[0]]) if len(resolved) else MAX_PAIRS_SHOWN + 1

    def summary(self, precision: int) -> dict[str, str]:
        """Display text: the difference, its interval, the pairs, the verdict, the pairs needed."""
        p = precision
        level = f"{100 * self.confidence:g} %"
        if self.n_pairs == 0:
            w = self.welch
            delta = f"{w[0]:+.{p}f} (unpaired)" if w else "—"
            ci = f"[{w[1]:+.{p}f}, {w[2]:+.{p}f}] Welch, unpaired" if w else "—"
            return {"delta": delta, "ci": ci, "pairs": "0", "verdict": "no pairs", "needed": "—", "p": "—",
                    "p_adjusted": "—"}
        ci = self.interval
        needed = self.pairs_needed
        return {
            "delta": f"{self.delta:+.{p}f}",
            "ci": f"[{ci[0]:+.{p}f}, {ci[1]:+.{p}f}]" if ci else f"— (one pair: no {level} interval)",
            "pairs": str(self.n_pairs),
            "verdict": self.verdict,
            "needed": "—" if needed is None else (f">{MAX_PAIRS_SHOWN:,}" if needed > MAX_PAIRS_SHOWN else str(needed)),
            "p": p_text(self.p_value),
            "p_adjusted": p_text(self.p_adjusted),
        }

    def csv_fields(self) -> dict[str, Any]:
        ci = self.interval
        w = self.welch
        return {"delta": self.delta, "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
                "n_pairs": self.n_pairs, "sd_diff": self.sd, "verdict": self.verdict,
                "pairs_needed": self.pairs_needed, "unpaired": len(self.unpaired),
                "welch_delta": w[0] if w else None, "welch_low": w[1] if w else None,
                "welch_high": w[2] if w else None, "confidence": self.confidence, "p_value": self.p_value,
                "p_adjusted": self.p_adjusted, "correction": self.correction or "none"}


def p_text(p: float | None) -> str:
    """A p-value for people: three decimals, or '<0.001'."""
    if p is None:
        return "—"
    return "<0.001" if p < 0.0005 else f"{p:.3f}"


def adjust(rows: dict[Any, Comparison], correction: str | None) -> None:
    """Adjust the rows' p-values for their number (Holm or Bonferroni, statsmodels), in place.

    The family is every row compared to the baseline that has a p-value (two pairs or more).
    """
    if correction is None:
        return
    family = [c for c in rows.values() if c.p_value is not None]
    for c in rows.values():
        c.correction, c.p_adjusted, c.family_size = correction, None, max(len(family), 1)
    if not family:
        return
    from statsmodels.stats.multitest import multipletests

    adjusted = multipletests([c.p_value for c in family], alpha=family[0].alpha, method=correction)[1]
    for c, p in zip(family, adjusted):
        c.p_adjusted = float(p)


@dataclass
class Comparisons:
    """Every row's comparison, keyed by the row's group key; the baseline's own unmatched runs."""

    base: Baseline
    rows: dict[tuple[str, ...], Comparison]
    baseline_rows: set[tuple[str, ...]]
    baseline_unused: list[str]
    correction: str | None = None

    def project(self, keys: list[str], onto: list[str]) -> "Comparisons":
        """The same comparisons keyed by a subset of the keys (those that vary: a pivot's shown keys)."""
        idx = [keys.index(k) for k in onto]
        pick = lambda key: tuple(key[i] for i in idx)  # noqa: E731
        return Comparisons(self.base, {pick(k): c for k, c in self.rows.items()},
                           {pick(k) for k in self.baseline_rows}, self.baseline_unused, self.correction)

    def messages(self, name: Callable[[tuple[str, ...]], str] = "/".join) -> list[str]:
        """What could not be paired or has no interval; `name` names a row by its key."""
        out = []
        for key, c in self.rows.items():
            label = name(key)
            if c.unpaired:
                names = ", ".join(c.unpaired[:5]) + (f" and {len(c.unpaired) - 5} more" if len(c.unpaired) > 5 else "")
                out.append(f"{label}: {len(c.unpaired)} run(s) without a {self.base} partner (same config, seed "
                           f"and split): {names}")
            if c.n_pairs == 0:
                out.append(f"{label}: no run pairs with a {self.base} run"
                           + ("; the Δ shown is Welch's unpaired interval" if c.welch else ""))
            elif c.n_pairs == 1:
                out.append(f"{label}: one pair with {self.base}: a difference but no interval (run more seeds)")
        if self.baseline_unused:
            names = ", ".join(self.baseline_unused[:5]) + (
                f" and {len(self.baseline_unused) - 5} more" if len(self.baseline_unused) > 5 else "")
            out.append(f"{len(self.baseline_unused)} {self.base} run(s) paired with nothing: {names}")
        return out


def compare(results: list[Run], keys: list[str], metric: Metric, base: Baseline,
            confidence: float, correction: str | None = None) -> Comparisons:
    """Pair each completed non-baseline run with its baseline run; one Comparison per group of `keys`.

    `keys` must include the compared key: a row's baseline row is the same key values with the
    compared key set to the baseline's value.
    """
    if not 0 < confidence < 1:
        raise GenexpError(f"--confidence {confidence} is not between 0 and 1: e.g. --confidence 0.95")
    runs = [r for r in results if r.status == Status.COMPLETED and metric.value(r) is not None]
    if not any(has_key(r, base.key) for r in runs):
        raise GenexpError(f"--compare {base}: no run has the key {base.key!r}: name a result.json key "
                          f"(method, labels, ...) or a config key (method.eps, optim.lr, ...)")
    baseline = [r for r in runs if base.holds(r)]
    if not baseline:
        values = sorted({field_value(r, base.key) for r in runs})
        raise GenexpError(f"--compare {base}: no completed run has {base}: choose one of "
                          f"{', '.join(f'{base.key}={v}' for v in values)}")
    at = keys.index(base.key)
    row_of = lambda r: tuple(field_value(r, k) for k in keys)  # noqa: E731
    partners: dict[tuple, list[Run]] = defaultdict(list)
    base_rows: dict[tuple, list[float]] = defaultdict(list)
    for r in baseline:
        partners[pair_key(r, base)].append(r)
        base_rows[row_of(r)].append(metric.value(r))
    rows: dict[tuple[str, ...], Comparison] = {}
    used: set[str] = set()
    for r in runs:
        if base.holds(r):
            continue
        key = row_of(r)
        c = rows.setdefault(key, Comparison(base_values=base_rows.get(key[:at] + (base.value,) + key[at + 1:], []),
                                            confidence=confidence, higher_is_better=metric.higher_is_better))
        c.row_values.append(metric.value(r))
        found = partners.get(pair_key(r, base), [])
        if len(found) == 1:
            used.add(found[0].path)
            c.pairs.append((metric.value(r), metric.value(found[0])))
        else:
            c.unpaired.append(r.path + (f" ({len(found)} candidate partners)" if found else ""))
    unused = [r.path for r in baseline if r.path not in used]
    adjust(rows, correction)
    return Comparisons(base, rows, set(base_rows), unused if rows else [], correction)
