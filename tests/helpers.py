"""Running the real `genexp` command in a subprocess, as a user would; composing its config in-process."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

FAST = ["steps=20", "eval_every=10", "progress=false"]
TINY = [*FAST, "checkpoint_every=10", "model.widths=[16]", "cpu_threads=1"]


def train_cfg(*overrides: str, hydra_config: bool = False):
    """`genexp train`'s config for these overrides, composed in-process (nothing runs), as a run has it."""
    from genexp.command.compose import compose

    return compose(overrides, hydra_config=hydra_config)


def genexp(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "genexp", *args], cwd=cwd, capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def results_under(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))]


class Py2Pickler(pickle._Pickler):
    """Writes `bytes` with Python 2's `str` opcodes, as the official CIFAR files (pickled by
    Python 2) do: they then load as str keys with encoding='latin1' (torchvision) and as
    b'data'-style keys with encoding='bytes' (the dataset's own instructions)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def write_mnist_pickle(path: Path, n: tuple[int, int, int] = (30, 10, 20), seed: int = 0) -> tuple[str, tuple]:
    """The mnist.pkl.gz structure: ((x, y), (x, y), (x, y)), x float32 k/256 of shape (N, 784)."""
    rng = np.random.default_rng(seed)
    parts = tuple((rng.integers(0, 256, (k, 784)).astype(np.float32) / 256, np.arange(k, dtype=np.int64) % 10)
                  for k in n)
    with gzip.open(path, "wb") as f:
        # Python 2's str opcodes, as the real file (written by Python 2): its only globals are
        # numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype.
        Py2Pickler(f, protocol=2).dump(parts)
    return hashlib.sha256(path.read_bytes()).hexdigest(), parts


def in_process_train(monkeypatch, cwd: Path):
    """`genexp train` run in this process (no interpreter start-up; monkeypatches reach the run),
    in `cwd`: returns run(*args) -> exit code. Restores what main() changes: the environment and
    sys.argv (what a command learns of its sweep is its own: genexp.command.sweep.Sweep)."""
    from genexp.command import app as train_app

    for var in ("HYDRA_FULL_ERROR", train_app.TRACEBACK_ENV):
        monkeypatch.setenv(var, "")  # so that teardown restores the variable's absence (main() sets them)
        monkeypatch.delenv(var)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.chdir(cwd)
    # Hydra points the root logger at each run's genexp.log; a later test must not log into a dir
    # this one removed. dictConfig edits the list in place, so the original is set back whole.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))

    def run(*args: str) -> int:
        os.environ.pop("HYDRA_FULL_ERROR", None)  # main() sets it for Hydra; each run starts without
        try:
            return train_app.main(list(args))
        except SystemExit as e:
            return e.code
    return run


def edit_config(run: Path, key: str, node: object) -> None:
    """Set `key` in a run dir's config.yaml and its .hydra copy, as an attacker or a careless hand would."""
    from omegaconf import OmegaConf

    for path in (run / "config.yaml", run / ".hydra" / "config.yaml"):
        cfg = OmegaConf.load(path)
        OmegaConf.update(cfg, key, node, force_add=True, merge=False)
        OmegaConf.save(cfg, path)


def finished_run(root: Path) -> Path:
    """A completed TINY run in root/run."""
    p = genexp("train", *TINY, f"hydra.run.dir={root / 'run'}", cwd=root)
    assert p.returncode == 0, p.stderr
    return root / "run"


def snapshot(root: Path) -> dict:
    """Every file under root, by relative path, with its bytes: what "nothing was changed" compares."""
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refusal_line(code: int, out: str, err: str, *names: str) -> str:
    """The refusal's one line (exit 2, no traceback), which must name each of `names`."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in out + err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def one_line_refusal(p: subprocess.CompletedProcess, *names: str) -> str:
    """refusal_line of a `genexp` process."""
    return refusal_line(p.returncode, p.stdout, p.stderr, *names)


def checkpoint_step(run_dir: Path) -> int:
    """The step of the run's checkpoint.pt, or -1 while there is none (or it is being written)."""
    import torch

    try:
        return torch.load(run_dir / "checkpoint.pt", weights_only=True)["loop"]["step"]
    except Exception:
        return -1


def one_line_refusal_here(code: int, capfd, *names: str) -> str:
    """refusal_line of `genexp train` run in this process (conftest's `in_process`): its exit code,
    and its output read from `capfd` (cleared before the run)."""
    return refusal_line(code, *capfd.readouterr(), *names)
