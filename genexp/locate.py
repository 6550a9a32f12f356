"""The object a dotted path names, as a config's `_target_` names it: `pkg.module.function`,
`pkg.module.Class`, `pkg.module.Class.method`, or a module. Hydra resolves `_target_` with a helper
of its private API; genexp resolves the same paths the same way (the longest prefix that imports,
then attributes) with importlib alone, so that a Hydra release cannot move it."""
from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any


def locate(path: str) -> Any:
    """The object `path` names, importing its modules as needed; ImportError when it names none
    (a module that is missing or fails to import, a missing attribute, or not a dotted name)."""
    parts = path.split(".") if isinstance(path, str) else []
    if not parts or not all(parts):
        raise ImportError(f"{path!r} is not a dotted name (relative names are not resolved)")
    obj: Any = _import(parts[0], path)
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        elif isinstance(obj, ModuleType):
            # a submodule that its package does not import itself
            obj = _import(".".join(parts[:i + 1]), path)
        else:
            raise ImportError(f"{path!r}: {'.'.join(parts[:i])} has no attribute {part!r}")
    return obj


def _import(module: str, path: str) -> ModuleType:
    try:
        return import_module(module)
    except Exception as e:  # a module that raises while importing names nothing either
        raise ImportError(f"{path!r}: module {module!r} does not import ({type(e).__name__}: {e})") from e
