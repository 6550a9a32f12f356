"""Checkpoints that restore a run exactly: weights, optimizer, every RNG, sampler positions.

Saved with a temp file + rename (a kill mid-write leaves the previous checkpoint intact) and
loaded with `weights_only=True`, so a checkpoint can never run code when loaded. A checkpoint
names the run it belongs to (`run_id`, a hash of the run's config), so resuming refuses one copied
from another run.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genexp.errors import GenexpError
from genexp.runs.files import atomic_write

# Keys that say how or where a run executes, not what it computes; they stay out of `run_id`:
# device and progress are taken from the resuming command, resume is the command itself,
# cpu_threads, checkpoint_every, log_every and logger change neither the numbers nor the result (log_every,
# logger: added later, so a run dir recorded before them keeps its id), allow_targets says
# which plugins the command trusts (never taken from a run dir), and a cache_dir (at any depth)
# only says where a cache lives. Everything else names the run: data, split, model, method,
# optimizer, steps, seeds, the evaluation schedule, amp, compile, tag, experiment_name.
NOT_IDENTITY = frozenset({"device", "progress", "resume", "cpu_threads", "checkpoint_every", "log_every",
                          "logger", "allow_targets", "hydra", "cache_dir"})


class UnsafeCheckpoint(GenexpError):
    """A file that holds more than tensors and plain values: refused, never unpickled further."""


def _identity(node: Any, top: bool = True) -> Any:
    if isinstance(node, dict):
        if top and "ema_decay" in node and "eval_ema" not in node:  # eval_ema's name in runs before the rename
            node = {**{k: v for k, v in node.items() if k != "ema_decay"}, "eval_ema": node["ema_decay"]}
        return {k: _identity(v, False) for k, v in node.items()
                if not (k in NOT_IDENTITY and (top or k == "cache_dir"))}
    if isinstance(node, list):
        return [_identity(v, False) for v in node]
    return node


def run_id(config: Any) -> str:
    """A short hash of a run's resolved config (a DictConfig or the plain dict a checkpoint holds)
    without the NOT_IDENTITY keys: equal for every session of one run, different for another run."""
    from omegaconf import DictConfig, OmegaConf

    plain = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
    text = json.dumps(_identity(plain), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_belongs(ck: dict[str, Any], config: Any, path: Path) -> None:
    """Refuse (GenexpError: one line, exit 2) a checkpoint that is not this run's: saved by a run
    with another config (another step count included), or at a step beyond the run's end."""
    theirs = ck.get("run_id")
    if theirs is None and isinstance(ck.get("config"), dict):
        theirs = run_id(ck["config"])  # a checkpoint from before run_id was stored
    ours = run_id(config)
    if theirs != ours:
        raise GenexpError(f"{path} belongs to another run (its config hash is {theirs}, this run's {ours}): a "
                          f"checkpoint resumes only the run that saved it; nothing was changed: restore this run's "
                          f"own checkpoint.pt, or start a new run")
    step, steps = ck.get("loop", {}).get("step"), config.get("steps")
    if isinstance(step, int) and isinstance(steps, int) and step > steps:
        raise GenexpError(f"{path} was saved at step {step}, past this run's steps={steps}: it is not this run's "
                          f"checkpoint; nothing was changed")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.as_tensor(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
            "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically: a failed save (a full disk) leaves the previous file and no temp file."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint's contents; one that holds anything but tensors and plain values is refused
    (GenexpError) without torch's own message, which suggests `weights_only=False`: advice that would
    let the file run code."""
    try:
        with warnings.catch_warnings():
            # torch warns about what it finds in the file (a raw pickle's protocol, a TorchScript
            # archive) before it fails on it: genexp's verdict below is the one line a user sees
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "global" in ln.lower()]
        if not lines:  # damaged bytes, not a refused object: unreadable, and torch's advice stays out
            raise pickle.UnpicklingError(f"{path} is not a readable checkpoint") from None
        what = lines[0].rstrip(".")
        raise UnsafeCheckpoint(f"{path} is not a weights-only checkpoint ({what[:200]}): genexp never loads code "
                          f"from a checkpoint; use a checkpoint.pt or best.pt that genexp wrote") from None
