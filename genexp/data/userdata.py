"""What the user-data loaders (npz, csv, imagefolder, text) share: path checks, label encoding,
the seeded test hold-out. Every problem is one GenexpError line naming the key to fix."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from genexp.data.dataset import stratified_holdout
from genexp.errors import GenexpError

log = logging.getLogger("genexp")


def user_path(value: Any, key: str, what: str, *, directory: bool = False) -> Path:
    """`value` as an existing file (or folder), else one line saying what to set."""
    if value is None or str(value).strip() in ("", "???"):
        raise GenexpError(f"{key} is not set: set {key}=<{what}>")
    path = Path(os.path.expandvars(os.path.expanduser(str(value))))
    if not path.exists():
        raise GenexpError(f"{key}={value} does not exist: set {key}=<{what}>")
    if directory and not path.is_dir():
        raise GenexpError(f"{key}={value} is not a folder: set {key}=<{what}>")
    if not directory and not path.is_file():
        raise GenexpError(f"{key}={value} is not a file: set {key}=<{what}>")
    return path


def check_fraction(value: float, key: str) -> float:
    if not isinstance(value, (int, float)) or not 0 < value < 1:
        raise GenexpError(f"{key}={value} must be in (0, 1): set e.g. {key}=0.2")
    return float(value)


def _missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip() == ""


def _as_int(v: Any) -> int | None:
    """The integer a label stands for (3, 3.0, '3'), or None when it is not one."""
    if isinstance(v, (bool, np.bool_)):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f.is_integer() else None


def encode_labels(train: Sequence[Any], test: Sequence[Any] | None, key: str
                  ) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Raw labels -> class indices 0..K-1 in sorted order of the label values (numerically when
    every label is an integer, else as strings). Missing labels (empty, NaN, or -1 for integer
    labels) become -1: those rows only join the unlabelled pool. Test rows must be labelled
    with classes seen in training."""
    train = list(train)
    test = None if test is None else list(test)
    present = [v for v in train + (test or []) if not _missing(v)]
    ints = [_as_int(v) for v in present]
    numeric = all(i is not None for i in ints)
    if numeric:
        bad = sorted({i for i in ints if i < -1})
        if bad:
            raise GenexpError(f"{key} has the negative label {bad[0]}: use -1 (or an empty cell) for unlabelled rows "
                              f"and labels >= 0 for classes")

        def norm(v: Any) -> Any:
            if _missing(v):
                return None
            i = _as_int(v)
            return None if i == -1 else i
    else:
        def norm(v: Any) -> Any:
            return None if _missing(v) else str(v).strip()

    tr = [norm(v) for v in train]
    classes = sorted({v for v in tr if v is not None})
    if numeric:
        _refuse_stray_labels(tr, classes, key)
    if len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no labelled rows"
        raise GenexpError(f"{key}: the training data has {found}; a classifier needs at least 2 classes: "
                          f"check that {key} names the label column and that rows carry labels")
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.asarray([-1 if v is None else index[v] for v in tr], dtype=np.int64)
    y_test = None
    if test is not None:
        te = [norm(v) for v in test]
        unknown = sorted({str(v) for v in te if v is not None and v not in index})
        if unknown:
            raise GenexpError(f"{key}: the test data has the class {unknown[0]!r}, which no training row has: "
                              f"give training examples of every class")
        y_test = np.asarray([-1 if v is None else index[v] for v in te], dtype=np.int64)
    return y_train, y_test, [str(c) for c in classes]


def _refuse_stray_labels(labels: list[Any], classes: list[int], key: str) -> None:
    """Integer labels past a gap in the consecutive run from the smallest (0..9 and one 99) with
    only a handful of rows are a typo, not a class: refuse rather than train an 11th class."""
    run_end = classes[0]
    while run_end + 1 in set(classes):
        run_end += 1
    if run_end == classes[-1]:
        return
    labelled = [v for v in labels if v is not None]
    few = max(2, int(0.01 * len(labelled)))
    counts = {c: labelled.count(c) for c in classes if c > run_end}
    stray = sorted(c for c, n in counts.items() if n <= few)
    if stray:
        c = stray[0]
        rows = [i for i, v in enumerate(labels) if v == c]
        raise GenexpError(f"{key}: the label {c} ({counts[c]} row(s), first row {rows[0]}) lies outside the classes "
                          f"{classes[0]}..{run_end} the other rows use: a stray label? fix those rows (or use -1 for "
                          f"unlabelled rows)")


def split_test(y: np.ndarray, test_fraction: float, test_seed: int, key: str = "dataset.test_fraction"
               ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): a seeded, stratified `test_fraction` of the LABELLED rows held out
    as the test split; unlabelled rows (y == -1) all stay in training."""
    check_fraction(test_fraction, key)
    labelled = np.flatnonzero(y >= 0)
    _, held = stratified_holdout(y[labelled], test_fraction, test_seed)
    test = labelled[held]
    if len(test) == 0:
        raise GenexpError(f"{key}={test_fraction} holds out no test rows from {len(labelled)} labelled rows: "
                          f"raise {key} or give a separate test file")
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, test


def drop_unlabelled_test(y_test: np.ndarray, where: str) -> np.ndarray:
    """Indices of labelled test rows (an unlabelled test row cannot be scored)."""
    keep = np.flatnonzero(y_test >= 0)
    if len(keep) < len(y_test):
        log.warning("%s: %d test rows without a label are ignored", where, len(y_test) - len(keep))
    if len(keep) == 0:
        raise GenexpError(f"{where} has no labelled test rows: give the test data labels")
    return keep
