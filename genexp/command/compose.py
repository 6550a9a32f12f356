"""The run config `genexp train <overrides>` composes, without running it: for `genexp bench`, for
tests and for a notebook (then `genexp.train.run`), with the preset's per-method settings merged."""
from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig


def compose(overrides: Sequence[str], hydra_config: bool = False) -> DictConfig:
    """`genexp train`'s config for `overrides` (with `hydra_config`, Hydra's own node too: sweeper
    params, launcher)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from genexp.command.job import known_methods
    from genexp.train.method_overrides import apply_method_overrides

    overrides = list(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_module("genexp.configs", version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides, return_hydra_config=hydra_config)
        return apply_method_overrides(cfg, overrides, known=lambda: known_methods(overrides))
