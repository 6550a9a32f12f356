"""Your own arrays in a NumPy .npz: `x` (N, ...) and `y` (N,), optionally `x_test`/`y_test`.

`y == -1` marks unlabelled rows (they only join the unlabelled pool); labels may also be
strings (mapped to 0..K-1 in sorted order). Without `x_test` a seeded, stratified
`test_fraction` of the labelled rows becomes the test split. uint8 `x` (images) is kept as
uint8 and scaled to [0, 1] per batch on the device. The file is read with
allow_pickle=False: it is never unpickled, so object arrays are refused.
"""
from __future__ import annotations

import zipfile

import numpy as np
import torch

from genexp.data.dataset import Dataset, as_long
from genexp.data.preprocess import Affine, Scale
from genexp.data.userdata import drop_unlabelled_test, encode_labels, split_test, user_path
from genexp.errors import GenexpError


def _array(z, name: str, key: str) -> np.ndarray:
    try:
        return z[name]
    except ValueError as e:  # object arrays need pickle, which we never allow
        raise GenexpError(f"{key}: array {name!r} holds Python objects (it would need unpickling, which genexp "
                          f"never does): save it as a numeric or string array ({e})") from None
    except (EOFError, OSError, zipfile.BadZipFile) as e:  # a damaged member (bad CRC, cut short): bad input, not a crash
        raise GenexpError(f"{key}: array {name!r} is damaged ({(str(e).splitlines() or [''])[0]}): save the file "
                          f"again with numpy.savez") from None


def _features(x: np.ndarray, name: str, key: str) -> np.ndarray:
    if x.ndim < 2:
        raise GenexpError(f"{key}: array {name!r} has shape {x.shape}; it needs one row per example, shape (N, ...): "
                          f"reshape to (N, features)")
    if x.dtype.kind not in "biuf":
        raise GenexpError(f"{key}: array {name!r} has non-numeric dtype {x.dtype}: save numeric features")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise GenexpError(f"{key}: array {name!r} contains NaN or infinite values: fill or drop those rows")
    return x


def load_npz(path: str | None = None, test_fraction: float = 0.2, test_seed: int = 0, standardize: bool = False,
             val_size: float | int = 0.1) -> Dataset:
    key = "dataset.path"
    p = user_path(path, key, "your .npz file with arrays x and y")
    try:
        z = np.load(p, allow_pickle=False)
    except EOFError:  # numpy's word for a 0-byte file: an input error like any other unreadable file
        raise GenexpError(f"{key}={path} is empty (0 bytes): save your arrays with numpy.savez(path, x=..., y=...)"
                          ) from None
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        # numpy takes any file without the zip or .npy magic for a pickle and suggests allow_pickle:
        # advice that would let the file run code, so it is left out
        why = "neither a zip nor a .npy file" if "allow_pickle" in str(e) else str(e)
        raise GenexpError(f"{key}={path} is not a readable .npz file ({why}): save it with numpy.savez") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise GenexpError(f"{key}={path} is a single .npy array, not an .npz: save it with numpy.savez(path, x=..., y=...)")
    with z:
        names = set(z.files)
        for need in ("x", "y"):
            if need not in names:
                raise GenexpError(f"{key}={path} has no array {need!r} (it has {sorted(names)}): save it with "
                                  f"numpy.savez(path, x=features, y=labels)")
        if ("x_test" in names) != ("y_test" in names):
            have, lack = ("x_test", "y_test") if "x_test" in names else ("y_test", "x_test")
            raise GenexpError(f"{key}={path} has {have!r} but no {lack!r}: save both or neither")
        where = f"{key}={path}"
        x = _features(_array(z, "x", where), "x", key)
        y = _array(z, "y", where)
        x_test = _features(_array(z, "x_test", where), "x_test", key) if "x_test" in names else None
        y_test = _array(z, "y_test", where) if "y_test" in names else None
    for xs, ys, nx, ny in ((x, y, "x", "y"), (x_test, y_test, "x_test", "y_test")):
        if xs is None:
            continue
        if ys.ndim != 1 or len(ys) != len(xs):
            raise GenexpError(f"{key}: {ny!r} has shape {ys.shape} but {nx!r} has {len(xs)} rows: give one label per row")
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise GenexpError(f"{key}: 'x_test' rows have shape {x_test.shape[1:]} but 'x' rows have {x.shape[1:]}: "
                          f"save matching shapes")
    y_enc, y_test_enc, names_ = encode_labels(y.tolist(), None if y_test is None else y_test.tolist(), f"{key} (y)")
    if x_test is None:
        train, test = split_test(y_enc, test_fraction, test_seed)
        x, x_test, y_enc, y_test_enc = x[train], x[test], y_enc[train], y_enc[test]
    else:
        keep = drop_unlabelled_test(y_test_enc, f"{key} (y_test)")
        x_test, y_test_enc = x_test[keep], y_test_enc[keep]
    images = x.dtype == np.uint8
    xt = torch.from_numpy(np.ascontiguousarray(x if images else x.astype(np.float32)))
    xtt = torch.from_numpy(np.ascontiguousarray(x_test if images else x_test.astype(np.float32)))
    pre = Scale(1 / 255) if images else None
    if standardize:
        # Per-feature statistics of the training rows only.
        ref = xt.float() / 255 if images else xt
        pre = Affine(ref.mean(0), ref.std(0).clamp_min(1e-6), scale=1 / 255 if images else 1.0)
    return Dataset(name="npz", x_train=xt, y_train=as_long(y_enc), x_test=xtt, y_test=as_long(y_test_enc),
                   num_classes=len(names_), class_names=names_, val_size=val_size, preprocess=pre)
