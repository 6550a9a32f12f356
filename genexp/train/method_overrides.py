"""Per-method settings of an experiment preset, as plain data in its own yaml:

    method_overrides:
      vat: {eps: 1.5, xi: 10.0}
      mean_teacher: {weight: 8.0, optim: {lr: 4.0e-4}}

The entry of the run's method is merged into `method` (its `optim` key, if any, into `optim`)
once the config is composed, before it is checked or recorded, so config.yaml holds the values
the run used and `method_overrides` itself is not recorded. A preset that includes another in its
defaults list inherits its map, key by key. What the command line or a sweep sets (method.eps=...)
beats the preset's entry, as it beats everything a preset says. A name that is not a method would
never apply: it is refused instead of skipped.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from genexp.errors import GenexpError

KEY = "method_overrides"
# An entry's keys are the method's, but for this one: the run's optimiser settings for that method
# (Oliver et al.'s learning rate per method in cifar10_labels).
OPTIM = "optim"


def shipped_methods() -> list[str]:
    """The method yaml files genexp ships (configs/method/*.yaml)."""
    folder = resources.files("genexp.configs") / "method"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _set_by(command: Iterable[str]) -> list[str]:
    """The dotted keys the command line (or a sweep) sets inside a node: method.eps, optim.lr. A
    group choice (method=vat, optim=sgd) sets no key: the preset's entry still applies on top."""
    keys = (o.split("=", 1)[0].lstrip("+~").split("@", 1)[0] for o in command if "=" in o)
    return [k for k in keys if "." in k and not k.startswith("hydra.")]


def _leaves(node: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}.{k}")]
    return [(prefix, node)]


def _table(cfg: DictConfig, known: Callable[[], Sequence[str]]) -> dict[str, Any]:
    """The preset's map, unresolved (an entry may name another key: eps: ${vat_eps}), checked."""
    node = cfg[KEY]
    table = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    if table is None:
        return {}
    example = f"e.g. {KEY}: {{vat: {{eps: 1.5}}}}"
    if not isinstance(table, dict):
        raise GenexpError(f"{KEY}={table!r} must map method names to their settings, {example}")
    names = known() if table else []
    for name, entry in table.items():
        if name not in names:
            raise GenexpError(f"{KEY}.{name} names no method ({name!r}): rename it to one of {', '.join(names)}, "
                              f"or remove it")
        if not isinstance(entry, dict) or not isinstance(entry.get(OPTIM, {}), dict):
            raise GenexpError(f"{KEY}.{name}={entry!r} must map the method's keys to values (and optim: to the "
                              f"optimiser's), {example}")
    return table


def apply_method_overrides(cfg: DictConfig, command: Sequence[str] = (),
                           known: Callable[[], Sequence[str]] = shipped_methods) -> DictConfig:
    """Merge `cfg.method_overrides[<the run's method>]` into `cfg` (in place) and drop the map;
    `command`: the overrides the config was composed with (Hydra's and the task's), whose keys win;
    `known`: the method names a map may use (the command's, hydra.searchpath included, come from
    genexp.command.job.known_methods). `cfg` itself, or GenexpError (one line) for a map naming
    something that is not a method."""
    if KEY not in cfg:
        return cfg
    table = _table(cfg, known)
    method = cfg.get("method")
    entry = dict(table.get(method.get("name"), {})) if isinstance(method, DictConfig) else {}
    optim = entry.pop(OPTIM, {})
    set_by_command = _set_by(command)
    with open_dict(cfg):
        for path, value in [*_leaves(entry, "method"), *_leaves(optim, "optim")]:
            if value == {} or any(path == k or path.startswith(k + ".") or k.startswith(path + ".")
                                  for k in set_by_command):
                continue
            # an interpolation (${vat_eps}) stays one: it resolves in the run's config, as it did in the preset's
            OmegaConf.update(cfg, path, value, merge=True, force_add=True)
        cfg.pop(KEY)
    return cfg
