"""Per-method settings of a preset: `method_preset/<table>/<method>.yaml`, where <table> is the
`method_settings` group choice that an experiment preset makes in its defaults list (so a preset
that inherits another inherits its table). A file there whose name is not a method would never
apply: it is refused instead of skipped."""
from __future__ import annotations

from typing import Any

from genexp.errors import GenexpError


def _repository() -> Any:
    """The config folders this run composed from, hydra.searchpath additions included (the global
    config loader's own repository predates them)."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    from hydra.core.hydra_config import HydraConfig

    path = ConfigSearchPathImpl()
    for source in HydraConfig.get().runtime.config_sources:
        path.append(source.provider, f"{source.schema}://{source.path}")
    return ConfigRepository(config_search_path=path)


def check_method_settings(choices: Any) -> None:
    """GenexpError when the chosen table holds a file for a method that does not exist."""
    table = choices.get("method_settings")
    if not table or str(table) == "null":
        return
    repo = _repository()
    known = set(repo.get_group_options("method"))
    unknown = sorted(set(repo.get_group_options(f"method_preset/{table}")) - known)
    if unknown:
        raise GenexpError(f"method_preset/{table}/{unknown[0]}.yaml names no method ({unknown[0]!r}): rename it to "
                          f"one of {', '.join(sorted(known))}, or remove it")
