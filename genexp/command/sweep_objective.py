"""What a sweeper optimises: `genexp train` returns validation accuracy, so every search maximises it.

Sweepers default to minimising (Optuna's `direction: minimize`, Nevergrad's `optim.maximize: false`,
Ax's `minimize: true`): used as a new user would, without genexp's `vat_search` preset, they would
report the worst trial as the best. A default is turned round here before the sweeper is built; a
minimise the user asked for on the command line is refused.
"""
from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from genexp.errors import GenexpError

log = logging.getLogger("genexp")

# (key under hydra.sweeper, the value that minimises, the value that maximises)
OBJECTIVE_KEYS = (("direction", "minimize", "maximize"), ("optim.maximize", False, True),
                  ("ax_config.experiment.minimize", True, False))


def _minimises(value: Any, minimise: Any) -> bool:
    if isinstance(minimise, bool):
        return value is minimise
    values = value if isinstance(value, (list, tuple)) else [value]  # multi-objective Optuna: a list
    return any(str(getattr(v, "name", v)).lower() == minimise for v in values)


def maximise_objective(config: DictConfig) -> str | None:
    """Make the sweeper in `config` maximise; a note saying what changed, or None.

    GenexpError when the user asked for minimisation on the command line."""
    sweeper = config.hydra.get("sweeper")
    if sweeper is None:
        return None
    overrides = [str(o) for o in config.hydra.overrides.get("hydra", [])]
    for key, minimise, maximise in OBJECTIVE_KEYS:
        value = OmegaConf.select(sweeper, key, default=None)
        if value is None or not _minimises(value, minimise):
            continue
        if any(o.split("=", 1)[0].lstrip("+~") == f"hydra.sweeper.{key}" for o in overrides):
            raise GenexpError(f"hydra.sweeper.{key}={value} would pick the worst trial: genexp train returns "
                              f"validation accuracy (higher is better); set hydra.sweeper.{key}={str(maximise).lower()}")
        with open_dict(config):
            OmegaConf.update(config, f"hydra.sweeper.{key}", maximise, force_add=True)
        return (f"hydra.sweeper.{key} set to {str(maximise).lower()}: genexp train returns validation accuracy, "
                f"which the search maximises")
    return None
