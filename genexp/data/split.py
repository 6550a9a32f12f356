"""The semi-supervised split: validation, labelled and unlabelled index sets."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genexp.errors import GenexpError


@dataclass
class Split:
    labeled: np.ndarray
    unlabeled: np.ndarray
    val: np.ndarray

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({k: v.tolist() for k, v in asdict(self).items()}))

    @classmethod
    def load(cls, path: Path) -> "Split":
        raw = json.loads(path.read_text())
        return cls(**{k: np.asarray(v, dtype=np.int64) for k, v in raw.items()})


def _val_counts(counts: np.ndarray, val_size: float | int) -> np.ndarray:
    """Per-class validation sizes, proportional to class frequency (stratified)."""
    total = counts.sum()
    n_val = int(round(val_size * total)) if isinstance(val_size, float) and val_size < 1 else int(val_size)
    per_class = np.floor(counts * n_val / max(total, 1)).astype(int)
    # Hand out the rounding remainder to the largest classes so the total is exact.
    for c in np.argsort(-counts)[: n_val - per_class.sum()]:
        per_class[c] += 1
    return per_class


PER_SEED = "per_seed"


def drawn_split_seed(split_seed: int | str, seed: int) -> int:
    """The seed the labelled set is drawn with: `split_seed`, or the run's `seed` with
    split_seed=per_seed (each seed of a sweep its own labelled set, the same for every method)."""
    return seed if split_seed == PER_SEED else int(split_seed)


def make_split(
    y: np.ndarray,
    labels: int | str,
    *,
    num_classes: int,
    split_seed: int,
    val_size: float | int = 0.1,
    strategy: str = "balanced",
    unlabeled_includes_labeled: bool = False,
) -> Split:
    """Hold out a stratified validation set, then pick `labels` labelled examples from the rest.

    strategy: "balanced" (labels/num_classes per class, remainder to random classes),
    "random" (uniform over the pool), "first" (the first `labels` rows of the pool in file
    order, as article 7466 did). Rows with y == -1 only ever join the unlabelled pool. Every
    choice comes from `split_seed` alone, so the same seed gives the same split on any machine.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(split_seed)
    val_idx, pool = _hold_out_val(y, num_classes, val_size, rng)
    pool_all = np.sort(np.concatenate(pool))
    if labels == "all":
        labeled = pool_all
    else:
        n = _label_count(labels, num_classes, len(pool_all))
        labeled = np.sort(_pick_labeled(y, pool, pool_all, n, num_classes, strategy, rng))

    unlabeled_only = np.flatnonzero(y < 0)
    rest = pool_all if unlabeled_includes_labeled else np.setdiff1d(pool_all, labeled)
    unlabeled = np.sort(np.concatenate([rest, unlabeled_only]))
    if len(unlabeled) == 0:
        # labels=all without extra data: the labelled set is the only unlabelled data there is.
        unlabeled = labeled.copy()
    return Split(labeled=labeled.astype(np.int64), unlabeled=unlabeled.astype(np.int64), val=val_idx.astype(np.int64))


def _hold_out_val(y: np.ndarray, num_classes: int, val_size: float | int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(validation rows, per class the sorted rows left for the labelled/unlabelled pool)."""
    labeled_rows = np.flatnonzero(y >= 0)
    counts = np.bincount(y[labeled_rows], minlength=num_classes)
    val_per_class = _val_counts(counts, val_size)
    val, pool = [], []
    for c in range(num_classes):
        idx = labeled_rows[y[labeled_rows] == c]
        idx = idx[rng.permutation(len(idx))]
        val.append(idx[: val_per_class[c]])
        pool.append(np.sort(idx[val_per_class[c]:]))
    return np.sort(np.concatenate(val)), pool


def _label_count(labels: int | str, num_classes: int, available: int) -> int:
    try:
        n = int(labels)
    except (TypeError, ValueError):
        raise GenexpError(f"labels={labels!r} is not a number: set labels=<int> or labels=all") from None
    if n < num_classes:
        raise GenexpError(f"labels={n} is fewer than the {num_classes} classes: set labels>={num_classes}")
    if n > available:
        raise GenexpError(f"labels={n} exceeds the {available} labelled training examples left after "
                          f"validation: set labels<={available} or labels=all")
    return n


def _pick_labeled(y: np.ndarray, pool: list[np.ndarray], pool_all: np.ndarray, n: int, num_classes: int,
                  strategy: str, rng: np.random.Generator) -> np.ndarray:
    """`n` labelled rows of the pool by `strategy` (unsorted)."""
    if strategy == "balanced":
        per_class = np.full(num_classes, n // num_classes)
        per_class[rng.choice(num_classes, n % num_classes, replace=False)] += 1
        short = [c for c in range(num_classes) if per_class[c] > len(pool[c])]
        if short:
            raise GenexpError(f"labels={n} needs {per_class[short[0]]} examples of class {short[0]} but only "
                              f"{len(pool[short[0]])} exist: lower labels or set labeled_strategy=random")
        return np.concatenate([rng.choice(pool[c], per_class[c], replace=False) for c in range(num_classes)])
    if strategy == "random":
        return rng.choice(pool_all, n, replace=False)
    if strategy == "first":
        labeled = pool_all[:n]
        missing = sorted(set(range(num_classes)) - set(y[labeled].tolist()))
        if missing:
            raise GenexpError(f"labeled_strategy=first: the first {n} training rows have no example of class "
                              f"{missing[0]} (is the file sorted by label?): shuffle the file or set "
                              f"labeled_strategy=balanced")
        return labeled
    raise GenexpError(f"labeled_strategy={strategy!r} is unknown: use balanced, random or first")
