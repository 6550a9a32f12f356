"""Your own table as CSV: numeric feature columns plus `label_column`.

Empty label cells (or -1 with integer labels) mark unlabelled rows. Labels may be strings
(mapped to 0..K-1 in sorted order). The test split is `test_path` (same columns) or a seeded,
stratified `test_fraction` of the labelled rows. Features are standardised with the training
rows' mean/std (`standardize`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from genexp.data.dataset import Dataset, as_long
from genexp.data.userdata import drop_unlabelled_test, encode_labels, split_test, user_path
from genexp.errors import GenexpError


def read_table(path: Path, key: str, sep: str = ","):
    import pandas as pd

    try:
        return pd.read_csv(path, sep=sep, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GenexpError(f"{key}={path} could not be read as CSV ({reason}): give a comma-separated file with "
                          f"a header row (or set dataset.sep)") from None


def require_columns(df, columns: Sequence[str], key: str, column_key: str) -> None:
    for col in columns:
        if col not in df.columns:
            raise GenexpError(f"{key}: no column {col!r} (columns: {', '.join(map(str, df.columns))}): "
                              f"set {column_key}=<one of them>")


def feature_matrix(df, columns: Sequence[str], key: str) -> np.ndarray:
    import pandas as pd

    for col in columns:
        values = df[col]
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna() & values.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise GenexpError(f"{key}: feature column {col!r} is not numeric ({values.iloc[row]!r} in data row "
                              f"{row + 1}): drop it with dataset.drop_columns=[{col}] or encode it as numbers")
        if numeric.isna().any():
            row = int(np.flatnonzero(numeric.isna().to_numpy())[0])
            raise GenexpError(f"{key}: feature column {col!r} has an empty value (data row {row + 1}): fill it or "
                              f"drop it with dataset.drop_columns=[{col}]")
        if not np.isfinite(numeric.to_numpy(dtype=np.float64)).all():
            raise GenexpError(f"{key}: feature column {col!r} has infinite values: fill or drop them")
    return df[list(columns)].apply(pd.to_numeric).to_numpy(dtype=np.float32)


def load_csv(path: str | None = None, label_column: str = "label", test_path: str | None = None,
             feature_columns: Sequence[str] | None = None, drop_columns: Sequence[str] = (), sep: str = ",",
             test_fraction: float = 0.2, test_seed: int = 0, standardize: bool = True,
             val_size: float | int = 0.1) -> Dataset:
    p = user_path(path, "dataset.path", "your .csv file")
    df = read_table(p, "dataset.path", sep)
    require_columns(df, [label_column], "dataset.path", "dataset.label_column")
    drop = list(drop_columns or [])
    require_columns(df, drop, "dataset.path", "dataset.drop_columns")
    if feature_columns:
        features = list(feature_columns)
        require_columns(df, features, "dataset.path", "dataset.feature_columns")
    else:
        features = [c for c in df.columns if c != label_column and c not in drop]
    if label_column in features:
        raise GenexpError(f"dataset.feature_columns includes the label column {label_column!r}: remove it")
    if not features:
        raise GenexpError(f"dataset.path={path} has no feature columns besides {label_column!r}: add feature columns")
    x = feature_matrix(df, features, "dataset.path")
    labels, test_labels, x_test = df[label_column].tolist(), None, None
    if test_path:
        tp = user_path(test_path, "dataset.test_path", "your test .csv file")
        tdf = read_table(tp, "dataset.test_path", sep)
        require_columns(tdf, [label_column], "dataset.test_path", "dataset.label_column")
        missing = [c for c in features if c not in tdf.columns]
        if missing:
            raise GenexpError(f"dataset.test_path: no feature column {missing[0]!r}, which dataset.path has: give "
                              f"the test file the same columns")
        x_test = feature_matrix(tdf, features, "dataset.test_path")
        test_labels = tdf[label_column].tolist()
    y, y_test, names = encode_labels(labels, test_labels, f"dataset.label_column={label_column}")
    if x_test is None:
        train, test = split_test(y, test_fraction, test_seed)
        x, x_test, y, y_test = x[train], x[test], y[train], y[test]
    else:
        keep = drop_unlabelled_test(y_test, "dataset.test_path")
        x_test, y_test = x_test[keep], y_test[keep]
    if standardize:
        mean, std = x.mean(0), x.std(0)
        std[std < 1e-8] = 1.0
        x, x_test = (x - mean) / std, (x_test - mean) / std
    return Dataset(name="csv", x_train=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                   y_train=as_long(y), x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
                   y_test=as_long(y_test), num_classes=len(names), class_names=names, val_size=val_size)
