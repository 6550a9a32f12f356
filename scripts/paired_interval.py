"""Paired difference and interval from per-seed figures recorded in docs/RESULTS.md, for runs whose
run directories were not kept: the same computation as `genexp table --compare` (genexp's Comparison).

    python scripts/paired_interval.py --runs 82.89,81.72,81.16 --baseline 81.37,80.08,81.72
"""
from __future__ import annotations

import argparse

from genexp.tables.compare import Comparison


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="the compared method's values, one per seed, comma-separated")
    p.add_argument("--baseline", required=True, help="the baseline's values for the same seeds, in the same order")
    p.add_argument("--lower-is-better", action="store_true", help="the metric is an error or a loss")
    p.add_argument("--confidence", type=float, default=0.95)
    a = p.parse_args()
    runs = [float(v) for v in a.runs.split(",")]
    base = [float(v) for v in a.baseline.split(",")]
    if len(runs) != len(base):
        p.error(f"--runs has {len(runs)} values and --baseline {len(base)}: give one per seed for both")
    c = Comparison(pairs=list(zip(runs, base)), confidence=a.confidence, higher_is_better=not a.lower_is_better)
    s = c.summary(2)
    print(f"Δ {s['delta']} {s['ci']} ({100 * a.confidence:g} % interval), {s['pairs']} pairs, {s['verdict']}; "
          f"pairs to resolve: {s['needed']}; paired t-test p = {s['p']}")


if __name__ == "__main__":
    main()
