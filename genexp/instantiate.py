"""The object a config node describes: `_target_` called with the node's other keys, as Hydra's
`hydra.utils.instantiate` does it, for the trainer, which must run without Hydra (from a notebook,
from another tool). The subset genexp's configs use: keyword arguments, `_args_`, `_partial_`, nested
nodes with a `_target_` built first (Hydra's default `_recursive_`), and errors that name the target.
Values reach the callable as plain Python lists and dicts, not OmegaConf containers."""
from __future__ import annotations

import functools
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from genexp.locate import locate

SPECIAL_KEYS = frozenset({"_target_", "_args_", "_partial_", "_recursive_", "_convert_"})


class InstantiationException(Exception):
    """Building a node failed: its target does not resolve, or calling it raised (`__cause__`).
    Named and worded as Hydra's, so that a failure reads the same whichever built the object."""


def instantiate(node: Any, **kwargs: Any) -> Any:
    """Call (or with `_partial_`, wrap in functools.partial) the node's `_target_` with its keys,
    `kwargs` overriding them; nested nodes with a `_target_` are built first."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict) or "_target_" not in node:
        raise InstantiationException(f"cannot instantiate {type(node).__name__}: no _target_ key")
    return _build({**node, **kwargs})


def _build(node: dict) -> Any:
    target = node["_target_"]
    recursive = node.get("_recursive_", True)
    try:
        fn = locate(target)
    except ImportError as e:
        raise InstantiationException(f"Error locating target '{target}':\n{e!r}") from e
    args = [_value(a, recursive) for a in node.get("_args_", [])]
    kw = {k: _value(v, recursive) for k, v in node.items() if k not in SPECIAL_KEYS}
    if node.get("_partial_", False):
        return functools.partial(fn, *args, **kw)
    try:
        return fn(*args, **kw)
    except Exception as e:
        raise InstantiationException(f"Error in call to target '{target}':\n{e!r}") from e


def _value(v: Any, recursive: bool) -> Any:
    if not recursive:
        return v
    if isinstance(v, dict):
        return _build(v) if "_target_" in v else {k: _value(x, recursive) for k, x in v.items()}
    if isinstance(v, list):
        return [_value(x, recursive) for x in v]
    return v
