"""Running the real `genexp` command in a subprocess, as a user would; composing its config in-process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FAST = ["steps=20", "eval_every=10", "progress=false"]


def train_cfg(*overrides: str, hydra_config: bool = False):
    """`genexp train`'s config for these overrides, composed in-process (nothing runs);
    `hydra_config=True` keeps the `hydra` node (sweeper params, launcher)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("genexp.configs", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra_config)


def genexp(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "genexp", *args], cwd=cwd, capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def results_under(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))]
