"""Your own data as a Python function named by `dataset._target_` (e.g. `mypkg.data.load`).

It returns `(x_train, y_train, x_test, y_test)`, or a dict with those keys (and optionally
`class_names`): NumPy arrays, torch tensors or nested lists. `x_*` has one row per example, shape
(N, ...), numeric and finite; the model sees it as float32, as returned (nothing is scaled).
`y_*` holds class indices 0..K-1 (K inferred, every class present among the labelled training
rows); `y_train == -1` marks an unlabelled row (it only joins the unlabelled pool), and every test
row is labelled. The function gets the keys of its yaml as keyword arguments, except `name` and a
`val_size` it does not declare itself (the labelled rows held out for validation, as for every
dataset). Each problem with what it returns is one line naming the array and the fix.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from genexp.data.dataset import Dataset, as_long
from genexp.errors import GenexpError
from genexp.locate import locate

KEYS = ("x_train", "y_train", "x_test", "y_test")
GENEXP_KEYS = ("val_size",)


def genexp_keys(node: DictConfig) -> dict[str, Any]:
    """Remove from `node` (a user function's config) the keys genexp applies itself, those the
    function does not declare, and return them. genexp's own loaders keep theirs."""
    target = node.get("_target_")
    if not isinstance(target, str) or target.startswith("genexp."):
        return {}
    try:
        params = inspect.signature(locate(target)).parameters
    except Exception:  # does not import, or has no signature: instantiate says so
        return {}
    return {k: node.pop(k) for k in GENEXP_KEYS if k in node and k not in params}


def function_dataset(result: Any, where: str, name: str, val_size: float | int = 0.1) -> Dataset:
    """What the user's function returned (`result`), checked, as a Dataset."""
    parts, class_names = _parts(result, where)
    x_train, x_test = (_inputs(parts[k], k, where) for k in ("x_train", "x_test"))
    y_train, y_test = (_labels(parts[k], k, where) for k in ("y_train", "y_test"))
    for x, y, nx, ny in ((x_train, y_train, "x_train", "y_train"), (x_test, y_test, "x_test", "y_test")):
        if len(y) != len(x):
            raise GenexpError(f"{where}: {ny} has {len(y)} labels but {nx} has {len(x)} rows: return one label per row")
    if x_test.shape[1:] != x_train.shape[1:]:
        raise GenexpError(f"{where}: x_test rows have shape {x_test.shape[1:]} but x_train rows have "
                          f"{x_train.shape[1:]}: return matching shapes")
    k = _num_classes(y_train, y_test, where)
    if class_names is not None and len(class_names) != k:
        raise GenexpError(f"{where}: class_names has {len(class_names)} names for {k} classes (0..{k - 1}): "
                          f"return one name per class")
    return Dataset(name=name, x_train=_float(x_train), y_train=as_long(y_train), x_test=_float(x_test),
                   y_test=as_long(y_test), num_classes=k,
                   class_names=class_names if class_names is not None else [str(c) for c in range(k)],
                   val_size=val_size)


def _parts(result: Any, where: str) -> tuple[dict[str, Any], list[str] | None]:
    fix = "return (x_train, y_train, x_test, y_test) or a dict with those keys"
    if isinstance(result, Mapping):
        keys = [str(key) for key in result]
        missing = [key for key in KEYS if key not in result]
        extra = [key for key in keys if key not in (*KEYS, "class_names")]
        if missing or extra:
            what = f"has no {missing[0]!r}" if missing else f"has the unknown key {extra[0]!r}"
            raise GenexpError(f"{where} returned a dict that {what} (it has {keys}): {fix} (and optionally "
                              f"class_names)")
        names = result.get("class_names")
        if names is not None and (isinstance(names, str) or not all(isinstance(n, str) for n in names)):
            raise GenexpError(f"{where}: class_names is {names!r}: return a list of strings, one per class")
        return {key: result[key] for key in KEYS}, None if names is None else list(names)
    if isinstance(result, (tuple, list)) and len(result) == 4:
        return dict(zip(KEYS, result)), None
    got = f"a {type(result).__name__} of {len(result)}" if isinstance(result, (tuple, list)) else \
        f"a {type(result).__name__}"
    raise GenexpError(f"{where} returned {got}: {fix}")


def _array(value: Any, key: str, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        arr = (value.float() if value.is_floating_point() else value).numpy()  # bfloat16 has no NumPy dtype
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as e:  # ragged nested lists
            raise GenexpError(f"{where}: {key} is not an array ({(str(e).splitlines() or [''])[0]}): return a "
                              f"NumPy array or a torch tensor") from None
    if arr.dtype.kind not in "biuf":
        raise GenexpError(f"{where}: {key} has dtype {arr.dtype}, not numbers: return a numeric array "
                          f"(texts: use dataset=text)")
    return arr


def _inputs(value: Any, key: str, where: str) -> np.ndarray:
    x = _array(value, key, where)
    if x.ndim < 2:
        raise GenexpError(f"{where}: {key} has shape {x.shape}; it needs one row per example, shape (N, ...): "
                          f"reshape it to (N, features)")
    if len(x) == 0:
        raise GenexpError(f"{where}: {key} has no rows: return at least one example")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(1))[0])
        raise GenexpError(f"{where}: {key} holds NaN or infinite values (first in row {row}): fill or drop those rows")
    return x


def _labels(value: Any, key: str, where: str) -> np.ndarray:
    y = _array(value, key, where)
    if y.ndim != 1:
        raise GenexpError(f"{where}: {key} has shape {y.shape}: return one class index per row, shape (N,)")
    if y.dtype.kind == "b" or (y.dtype.kind == "f" and not (np.isfinite(y) & (y == np.round(y))).all()):
        bad = y[0] if y.dtype.kind == "b" else y[~(np.isfinite(y) & (y == np.round(y)))][0]
        raise GenexpError(f"{where}: {key} holds {bad.item()!r}, not a class index: return integer labels 0..K-1")
    y = y.astype(np.int64)
    lowest = -1 if key == "y_train" else 0
    if len(y) and y.min() < lowest:
        allowed = "-1 (unlabelled) or 0..K-1" if key == "y_train" else "0..K-1 (every test row is labelled)"
        raise GenexpError(f"{where}: {key} holds the label {int(y.min())}: labels must be {allowed}")
    return y


def _num_classes(y_train: np.ndarray, y_test: np.ndarray, where: str) -> int:
    labelled = y_train[y_train >= 0]
    k = int(max(labelled.max(initial=-1), y_test.max(initial=-1))) + 1
    absent = sorted(set(range(k)) - set(labelled.tolist()))
    if absent:
        raise GenexpError(f"{where}: no labelled row of y_train has class {absent[0]} (labels run 0..{k - 1}): "
                          f"labels must be 0..K-1 with every class among the labelled training rows; renumber them")
    if k < 2:
        raise GenexpError(f"{where}: the labelled rows have {k} class(es): a classifier needs at least 2")
    return k


def _float(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
