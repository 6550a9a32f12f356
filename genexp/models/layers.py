"""A model's layers of a kind, looked up once per model: some are asked for on every step (which
BatchNorm layers to freeze, whether the forward draws random numbers) and a WRN has ~100 modules.
A model's layers are fixed once built, so the lookup is cached on the module object."""
from __future__ import annotations

import weakref

import torch
from torch import nn

from genexp.models.mlp import GaussianNoise

_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[type, ...], list[nn.Module]]] = weakref.WeakKeyDictionary()


def layers_of(module: nn.Module, kinds: tuple[type, ...]) -> list[nn.Module]:
    """The submodules of `module` (itself included) that are instances of `kinds`, in module order."""
    if torch.compiler.is_compiling():  # traced once into the graph: a cache would add guards on its contents
        return [m for m in module.modules() if isinstance(m, kinds)]
    per_kind = _CACHE.get(module)
    if per_kind is None:
        per_kind = _CACHE[module] = {}
    found = per_kind.get(kinds)
    if found is None:
        found = per_kind[kinds] = [m for m in module.modules() if isinstance(m, kinds)]
    return found


RANDOM_LAYERS = (nn.modules.dropout._DropoutNd, GaussianNoise)


def draws_random(model: nn.Module) -> bool:
    """Whether the model's training forward draws random numbers (dropout, hidden-layer noise)."""
    return any((isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0) or (isinstance(m, GaussianNoise) and m.std > 0)
               for m in layers_of(model, RANDOM_LAYERS))
