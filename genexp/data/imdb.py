"""IMDB movie reviews (Maas et al. 2011): 25k train / 25k test, positive vs negative, plus the
50k-review `unsupervised` split, which joins the unlabelled pool (label -1).

`path` is a Hugging Face hub name (default `imdb`, fetched by `datasets.load_dataset` and cached
by it; needs network the first time) or a local copy:
  * a `save_to_disk` folder (a DatasetDict with train/test[/unsupervised] or a single Dataset),
  * a folder of split files: train/test/unsupervised as .parquet or .csv (also the hub's
    `plain_text/train-00000-of-00001.parquet` layout),
  * one .parquet or .csv file (the test split is then a seeded `test_fraction` hold-out).
Columns `text_column` and `label_column`. Texts stay raw: text models tokenise them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from genexp.data.dataset import Dataset, as_long
from genexp.data.userdata import drop_unlabelled_test, encode_labels, split_test
from genexp.errors import GenexpError

SPLITS = ("train", "test", "unsupervised")
FILE_TYPES = (".parquet", ".csv")


def _read_file(path: Path, key: str):
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as e:
        raise GenexpError(f"{key}: could not read {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
                          f"give a parquet or CSV file with columns text,label") from None


def _split_files(folder: Path, split: str) -> list[Path]:
    found: list[Path] = []
    for ext in FILE_TYPES:
        for pattern in (f"{split}{ext}", f"{split}-*{ext}", f"*/{split}{ext}", f"*/{split}-*{ext}"):
            found += sorted(folder.glob(pattern))
    return sorted(set(found))


class _Frame:
    """A split as (texts, labels) lists, from pandas or a datasets.Dataset."""

    def __init__(self, texts: list[str], labels: list, names: list[str] | None = None) -> None:
        self.texts, self.labels, self.names = texts, labels, names


def _from_pandas(df, key: str, where: str, text_column: str, label_column: str, need_label: bool = True) -> _Frame:
    for col, ck in ((text_column, "dataset.text_column"), (label_column, "dataset.label_column")):
        if col not in df.columns and (col == text_column or need_label):
            raise GenexpError(f"{key}: {where} has no column {col!r} (columns: {', '.join(map(str, df.columns))}): "
                              f"set {ck}=<one of them>")
    texts = ["" if not isinstance(t, str) else t for t in df[text_column].tolist()]
    labels = df[label_column].tolist() if label_column in df.columns else [None] * len(texts)
    return _Frame(texts, labels)


def _from_hf(ds, key: str, where: str, text_column: str, label_column: str, need_label: bool = True) -> _Frame:
    cols = ds.column_names
    for col, ck in ((text_column, "dataset.text_column"), (label_column, "dataset.label_column")):
        if col not in cols and (col == text_column or need_label):
            raise GenexpError(f"{key}: {where} has no column {col!r} (columns: {', '.join(cols)}): "
                              f"set {ck}=<one of them>")
    texts = [t if isinstance(t, str) else "" for t in ds[text_column]]
    labels = list(ds[label_column]) if label_column in cols else [None] * len(texts)
    feature = ds.features.get(label_column)
    names = list(feature.names) if getattr(feature, "names", None) else None
    return _Frame(texts, labels, names)


def _load_splits(path: str, text_column: str, label_column: str) -> dict[str, _Frame]:
    key = f"dataset.path={path}"
    local = Path(os.path.expandvars(os.path.expanduser(str(path))))
    if local.is_dir():
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            import datasets

            try:
                loaded = datasets.load_from_disk(str(local))
            except Exception as e:
                raise GenexpError(f"{key}: could not load the save_to_disk folder ({type(e).__name__}: {e})") from None
            if isinstance(loaded, datasets.DatasetDict):
                return {s: _from_hf(loaded[s], key, f"split {s!r}", text_column, label_column, s != "unsupervised")
                        for s in loaded if s in SPLITS}
            return {"train": _from_hf(loaded, key, "the dataset", text_column, label_column)}
        splits: dict[str, _Frame] = {}
        import pandas as pd

        for s in SPLITS:
            files = _split_files(local, s)
            if files:
                df = pd.concat([_read_file(f, key) for f in files], ignore_index=True)
                splits[s] = _from_pandas(df, key, f"{files[0].name}", text_column, label_column, s != "unsupervised")
        if "train" not in splits:
            raise GenexpError(f"{key} holds no train split: save it with Dataset(Dict).save_to_disk, or put "
                              f"train.parquet / train.csv (and test.*, unsupervised.*) there")
        return splits
    if local.is_file():
        if local.suffix.lower() not in FILE_TYPES:
            raise GenexpError(f"{key} is a {local.suffix or 'suffix-less'} file: give a .parquet or .csv file, or a "
                              f"save_to_disk folder")
        return {"train": _from_pandas(_read_file(local, key), key, local.name, text_column, label_column)}
    if str(path).startswith((".", "/", "~")) or (os.sep in str(path) and not _looks_like_hub_name(str(path))):
        raise GenexpError(f"{key} does not exist: set dataset.path=<save_to_disk folder, .parquet or .csv> or a hub "
                          f"name such as imdb")
    return _load_hub(str(path), key, text_column, label_column)


def _looks_like_hub_name(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts)


def _load_hub(name: str, key: str, text_column: str, label_column: str) -> dict[str, _Frame]:
    import datasets

    try:
        loaded = datasets.load_dataset(name)
    except Exception as e:
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = ("HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set and it is not in the cache: unset them once to download "
                "it" if offline else "no network or no such dataset")
        raise GenexpError(f"{key}: could not load it from the Hugging Face hub ({hint}; {type(e).__name__}): "
                          f"or set dataset.path=<a local save_to_disk folder, .parquet or .csv>") from None
    return {s: _from_hf(loaded[s], key, f"split {s!r}", text_column, label_column, s != "unsupervised")
            for s in loaded if s in SPLITS}


def load_imdb(path: str = "imdb", text_column: str = "text", label_column: str = "label", unlabeled: bool = True,
              max_unlabeled: int | None = None, test_fraction: float = 0.2, test_seed: int = 0,
              val_size: float | int = 1000) -> Dataset:
    splits = _load_splits(path, text_column, label_column)
    train, test = splits["train"], splits.get("test")
    texts, labels = list(train.texts), list(train.labels)
    unsup = splits.get("unsupervised")
    if unlabeled and unsup is not None:
        extra = unsup.texts if max_unlabeled is None else unsup.texts[: int(max_unlabeled)]
        texts += extra
        labels += [None] * len(extra)
    y, y_test, names = encode_labels(labels, None if test is None else test.labels, f"dataset.label_column={label_column}")
    if test is None:
        tr, te = split_test(y, test_fraction, test_seed)
        test_texts, y_test = [texts[i] for i in te], y[te]
        texts, y = [texts[i] for i in tr], y[tr]
    else:
        keep = drop_unlabelled_test(y_test, f"dataset.path={path} (test split)")
        test_texts, y_test = [test.texts[i] for i in keep], y_test[keep]
    hf_names = train.names
    if hf_names and [str(i) for i in range(len(hf_names))] == names:
        names = [str(n) for n in hf_names]
    return Dataset(name="imdb", x_train=texts, y_train=as_long(np.asarray(y)), x_test=test_texts,
                   y_test=as_long(np.asarray(y_test)), num_classes=len(names), class_names=names, val_size=val_size)
