"""How a run dir's config.yaml recorded by an earlier genexp reads today: the keys the group yaml
files declare since then, each with the value the code took when it was absent, and the classes
that moved to another module since. The trainer builds an old run as if it declared the added
keys (train.build.declared); `genexp table` reads an old run's config the same way, so that a
sweep continued across the change keeps its runs in one cell and `--compare` pairs old runs with
new ones."""
from __future__ import annotations

import copy
from typing import Any

# Added keys (dotted: group.leaf) and the value a run recorded without them ran with.
ADDED_KEYS: dict[str, Any] = {"model.text_encoder": None, "model.freeze": False, "optim.decay_rate": 0.1,
                              "optim.decay_steps": None}

# `_target_` values of classes that moved module since runs were recorded: the same class, named as
# a config composed today names it.
MOVED_TARGETS: dict[str, str] = {"genexp.methods.none.Supervised": "genexp.methods.supervised.Supervised"}


def missing_added_keys(config: Any) -> list[tuple[str, str]]:
    """(group, leaf) of each added key that `config` (a mapping: a plain dict or a DictConfig)
    lacks while holding its group; a config without the group (a partial one) is left alone."""
    missing = []
    for key in ADDED_KEYS:
        group, _, leaf = key.rpartition(".")
        node = config.get(group) if hasattr(config, "get") else None
        if hasattr(node, "keys") and leaf not in node:
            missing.append((group, leaf))
    return missing


def as_today(config: dict[str, Any]) -> dict[str, Any]:
    """A plain config (config.yaml as loaded by yaml) as a config composed today records it: the
    added keys it lacks at their old defaults, moved classes under their new names. A copy when
    anything changes; `config` itself is never changed."""
    missing = missing_added_keys(config)
    moved = [(path, target) for path, target in _targets(config) if isinstance(target, str) and target in MOVED_TARGETS]
    if not missing and not moved:
        return config
    config = copy.deepcopy(config)
    for group, leaf in missing:
        config[group][leaf] = copy.deepcopy(ADDED_KEYS[f"{group}.{leaf}"])
    for path, target in moved:
        node = config
        for k in path:
            node = node[k]
        node["_target_"] = MOVED_TARGETS[target]
    return config


def _targets(node: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path of the node holding it, value) of every `_target_` in a plain config."""
    found: list[tuple[tuple, Any]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_":
                found.append((path, v))
            else:
                found += _targets(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _targets(v, (*path, i))
    return found
