"""The semi-supervised split: validation, labelled and unlabelled index sets."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from genexp.errors import GenexpError


@dataclass
class Split:
    # Code says labelled/unlabelled; names that files and configs hold keep the config keys'
    # spelling: these fields are split.json's keys (as n_labeled is result.json's, labeled_strategy
    # a config key, and uses_unlabeled / setup(num_unlabeled=) the method API).
    labeled: np.ndarray
    unlabeled: np.ndarray
    val: np.ndarray

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({k: v.tolist() for k, v in asdict(self).items()}))

    @classmethod
    def load(cls, path: Path, max_bytes: int | None = None) -> "Split":
        """The split `save` wrote, or a GenexpError: a run dir is data, and its split.json may be
        anything (a directory, a FIFO, /dev/zero, floats that numpy would truncate)."""
        return _parse(_read(path, max_bytes), path)


SPLIT_KEYS = tuple(f.name for f in fields(Split))


def _read(path: Path, max_bytes: int | None) -> bytes:
    try:
        if not path.is_file():  # a FIFO or a device would block or never end
            raise GenexpError(f"{path} is not a regular file: restore the run's own split.json, or remove it "
                              f"(resume then draws the split again from the run's config); nothing was changed")
        with path.open("rb") as f:
            return f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as e:
        raise GenexpError(f"{path} is unreadable ({e.strerror or type(e).__name__}): restore the run's own "
                          f"split.json; nothing was changed") from None


def _parse(raw: bytes, path: Path) -> Split:
    def bad(why: str) -> GenexpError:
        return GenexpError(f"{path} is not a split genexp wrote ({why}): restore the run's own split.json, or remove "
                           f"it (resume then draws the split again from the run's config); nothing was changed")

    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise bad("empty" if not raw.strip() else "not JSON") from None
    if not isinstance(obj, dict) or set(obj) != set(SPLIT_KEYS):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise bad(f"it must be an object with exactly the keys {', '.join(SPLIT_KEYS)}, not {keys}")
    for key in SPLIT_KEYS:
        v = obj[key]
        # bool is an int, and np.asarray would truncate 1.5 to 1: only plain integers are indices.
        if not isinstance(v, list) or not all(type(i) is int for i in v):
            raise bad(f"{key} must be a list of integer indices")
    try:
        return Split(**{k: np.asarray(obj[k], dtype=np.int64).reshape(-1) for k in SPLIT_KEYS})
    except OverflowError:
        raise bad("an index does not fit in 64 bits") from None


def check_saved_split(path: Path, drawn: Split, n_rows: int) -> None:
    """Refuse (GenexpError) a saved split that is not `drawn`, the split the run's config draws
    from its data: a resumed run must train on the split its record (labels, split_seed, ...)
    describes, so an edited split.json cannot change its numbers under the same name. Compared
    exactly, order included: the batch sampler draws positions in these arrays."""
    expected = json.dumps({k: getattr(drawn, k).tolist() for k in SPLIT_KEYS}).encode()
    raw = _read(path, 16 * len(expected) + (1 << 20))  # room for any reformatting, not for /dev/zero's worth
    if raw == expected:
        return
    saved = _parse(raw, path)
    why = _difference(saved, drawn, n_rows)
    if why is not None:
        raise GenexpError(f"{path} is not the split this run's config draws ({why}): it was edited, or the data "
                          f"changed since the run started; restore the run's own split.json, or start a new run; "
                          f"nothing was changed")


def _difference(saved: Split, drawn: Split, n_rows: int) -> str | None:
    """The first way `saved` differs from `drawn`, in words; None when they are the same."""
    names = {"labeled": "labelled", "unlabeled": "unlabelled", "val": "validation"}
    for key in SPLIT_KEYS:
        out = getattr(saved, key)
        out = out[(out < 0) | (out >= n_rows)]
        if len(out):
            return f"{names[key]} index {out[0]} is outside the {n_rows} training rows"
    for key in SPLIT_KEYS:
        if len(getattr(saved, key)) != len(getattr(drawn, key)):
            return f"{len(getattr(saved, key))} {names[key]} indices where the config draws {len(getattr(drawn, key))}"
    if np.intersect1d(saved.val, np.concatenate([saved.labeled, saved.unlabeled])).size:
        return "validation indices inside the training set"
    for key in SPLIT_KEYS:
        if not np.array_equal(getattr(saved, key), getattr(drawn, key)):
            return f"other {names[key]} indices"
    return None


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
        labelled = pool_all
    else:
        n = _label_count(labels, num_classes, len(pool_all))
        labelled = np.sort(_pick_labelled(y, pool, pool_all, n, num_classes, strategy, rng))

    unlabelled_only = np.flatnonzero(y < 0)
    rest = pool_all if unlabeled_includes_labeled else np.setdiff1d(pool_all, labelled)
    unlabelled = np.sort(np.concatenate([rest, unlabelled_only]))
    if len(unlabelled) == 0:
        # labels=all without extra data: the labelled set is the only unlabelled data there is.
        unlabelled = labelled.copy()
    return Split(labeled=labelled.astype(np.int64), unlabeled=unlabelled.astype(np.int64), val=val_idx.astype(np.int64))


def _hold_out_val(y: np.ndarray, num_classes: int, val_size: float | int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(validation rows, per class the sorted rows left for the labelled/unlabelled pool)."""
    labelled_rows = np.flatnonzero(y >= 0)
    counts = np.bincount(y[labelled_rows], minlength=num_classes)
    val_per_class = _val_counts(counts, val_size)
    val, pool = [], []
    for c in range(num_classes):
        idx = labelled_rows[y[labelled_rows] == c]
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


def _pick_labelled(y: np.ndarray, pool: list[np.ndarray], pool_all: np.ndarray, n: int, num_classes: int,
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
        labelled = pool_all[:n]
        missing = sorted(set(range(num_classes)) - set(y[labelled].tolist()))
        if missing:
            raise GenexpError(f"labeled_strategy=first: the first {n} training rows have no example of class "
                              f"{missing[0]} (is the file sorted by label?): shuffle the file or set "
                              f"labeled_strategy=balanced")
        return labelled
    raise GenexpError(f"labeled_strategy={strategy!r} is unknown: use balanced, random or first")
