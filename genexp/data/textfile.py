"""Your own texts: a CSV or JSON-lines file with `text_column` and `label_column`.

Labels may be strings (mapped to 0..K-1 in sorted order); rows with an empty label (or -1 with
integer labels) are unlabelled. The test split is `test_path` or a seeded, stratified
`test_fraction` of the labelled rows. Texts stay raw: text models tokenise them with their
own `text_encoder`, vector models read TF-IDF.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from genexp.data.dataset import Dataset, as_long
from genexp.data.tabular import read_table, require_columns
from genexp.data.userdata import drop_unlabelled_test, encode_labels, split_test, user_path
from genexp.errors import GenexpError

JSONL = (".jsonl", ".json", ".ndjson")


def read_texts(path: Path, key: str, text_column: str, label_column: str, sep: str = ","
               ) -> tuple[list[str], list]:
    import pandas as pd

    if path.suffix.lower() in JSONL:
        try:
            df = pd.read_json(path, lines=path.suffix.lower() != ".json" or _looks_like_lines(path),
                              dtype=False)
        except ValueError as e:
            raise GenexpError(f"{key}={path} could not be read as JSON lines ({str(e).splitlines()[0]}): give one "
                              f"JSON object per line") from None
    else:
        df = read_table(path, key, sep)
    require_columns(df, [text_column], key, "dataset.text_column")
    require_columns(df, [label_column], key, "dataset.label_column")
    raw = df[text_column].tolist()
    missing = [i for i, t in enumerate(raw) if t is None or (isinstance(t, float) and np.isnan(t))]
    if missing:
        # A row without its text would train as an empty string: say so instead.
        raise GenexpError(f"{key}={path}: {len(missing)} of {len(raw)} rows have no {text_column!r} (first: row "
                          f"{missing[0] + 1}): give every row a text, or remove those rows")
    return [str(t) for t in raw], df[label_column].tolist()


def _looks_like_lines(path: Path) -> bool:
    with path.open(encoding="utf-8", errors="replace") as f:
        head = f.read(1).lstrip()
    return head != "["


def load_text(path: str | None = None, text_column: str = "text", label_column: str = "label",
              test_path: str | None = None, sep: str = ",", test_fraction: float = 0.2, test_seed: int = 0,
              val_size: float | int = 0.1) -> Dataset:
    p = user_path(path, "dataset.path", "your .csv or .jsonl file")
    texts, labels = read_texts(p, "dataset.path", text_column, label_column, sep)
    test_texts, test_labels = None, None
    if test_path:
        tp = user_path(test_path, "dataset.test_path", "your test .csv or .jsonl file")
        test_texts, test_labels = read_texts(tp, "dataset.test_path", text_column, label_column, sep)
    y, y_test, names = encode_labels(labels, test_labels, f"dataset.label_column={label_column}")
    if test_texts is None:
        train, test = split_test(y, test_fraction, test_seed)
        test_texts, y_test = [texts[i] for i in test], y[test]
        texts, y = [texts[i] for i in train], y[train]
    else:
        keep = drop_unlabelled_test(y_test, "dataset.test_path")
        test_texts, y_test = [test_texts[i] for i in keep], y_test[keep]
    return Dataset(name="text", x_train=texts, y_train=as_long(y), x_test=test_texts, y_test=as_long(y_test),
                   num_classes=len(names), class_names=names, val_size=val_size)
