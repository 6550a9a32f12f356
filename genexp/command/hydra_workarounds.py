"""What `genexp train` undoes of Hydra's own handling of run dirs, each with the behaviour it undoes.

Hydra makes the run dir, writes `.hydra/*.yaml` and opens `genexp.log` there before the task
function runs: before genexp can tell whether the run is new, is continued elsewhere or is refused.
A refusal must leave nothing and an earlier run's files must stay byte-identical, so these undo or
hold back what Hydra did until the run-dir policy (genexp.command.run_dir) has decided.
(The sweep's `multirun.yaml` is kept in genexp.command.sweep, with the sweep's other records.)
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from genexp.errors import TRACEBACK_ENV
from genexp.train import distributed
from genexp.train.threads import PARALLEL_ENV

# Turns Hydra's own writing of .hydra/*.yaml off (hydra_argv); save_hydra_files writes them once a
# new run is accepted. The force-add spelling tells this override from one a user gives (which
# hydra_argv leaves alone): Hydra keeps it verbatim in hydra.overrides.hydra, so it reaches the job
# in whatever process a launcher runs it.
NO_SUBDIR = "++hydra.output_subdir=null"


@contextmanager
def hydra_environment() -> Iterator[None]:
    """The environment variables `hydra_argv` and the sweep guard (PARALLEL_ENV) set are for this
    command only: an in-process caller (a test) gets its environment back, or a later subprocess
    would inherit HYDRA_FULL_ERROR=1."""
    saved_env = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", TRACEBACK_ENV, PARALLEL_ENV)}
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def hydra_argv(args: list[str]) -> str | None:
    """Set sys.argv (which Hydra's main reads) and the environment for `genexp train <args>`; the
    scratch dir of a torchrun rank > 0, which the caller removes once Hydra is done, else None."""
    sys.argv = ["genexp train", *args]
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        os.environ[TRACEBACK_ENV] = "1"
    rank = distributed.world_from_env().rank
    scratch = None
    if rank > 0:
        # Undoes Hydra making a run dir in every process under torchrun: only rank 0 keeps one;
        # the others write Hydra's files to a scratch dir.
        scratch = tempfile.mkdtemp(prefix=f"genexp-rank{rank}-")
        sys.argv += [f"hydra.run.dir={scratch}", NO_SUBDIR]
    elif not any(a.lstrip("+~").startswith("hydra.output_subdir") for a in args) \
            and not any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        # Undoes Hydra writing .hydra/*.yaml into the run dir before the run can be checked (and
        # rewriting a completed run's): save_hydra_files writes them once a new run is accepted.
        sys.argv.append(NO_SUBDIR)
    # Undoes Hydra's run_and_report, which prints its own errors (unknown group option, bad
    # override syntax) and exits 1: with HYDRA_FULL_ERROR=1 they reach us as exceptions.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    return scratch


def save_hydra_files(run_dir: Path, task_cfg: DictConfig) -> None:
    """Hydra's .hydra/{config,hydra,overrides}.yaml, written by us once a new run is accepted
    (hydra_argv turns Hydra's own writing off, which happens before a run could be refused)."""
    if NO_SUBDIR not in HydraConfig.get().overrides.hydra:  # the user's own hydra.output_subdir (null: no files) stands
        return
    hydra_cfg = OmegaConf.create(OmegaConf.to_container(HydraConfig.instance().cfg, resolve=False))
    hydra_cfg.hydra.output_subdir = ".hydra"  # Hydra's default, which hydra_argv turned off
    out = run_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    hydra_cfg.hydra.overrides.hydra = [o for o in hydra_cfg.hydra.overrides.hydra if o != NO_SUBDIR]
    OmegaConf.save(task_cfg, out / "config.yaml")
    OmegaConf.save(hydra_cfg, out / "hydra.yaml")
    OmegaConf.save(hydra_cfg.hydra.overrides.task, out / "overrides.yaml")


def undo_chdir(hc: Any) -> None:
    """Undoes hydra.job.chdir=true (Hydra changes into the run dir before the task runs): genexp
    writes into the run dir by its path; in the run dir, relative paths (dataset.path) would not
    be found and the dir could not be removed after a refusal."""
    if hc.job.chdir and Path.cwd() != Path(hc.runtime.cwd):
        os.chdir(hc.runtime.cwd)


def remove_if_empty(path: Path) -> None:
    """Undoes Hydra making the run dir (and its parents) before the task runs: a run dir that a
    run then wrote nothing into (refused, resumed elsewhere) is removed."""
    try:
        path.rmdir()
    except OSError:
        return
    # and the parents Hydra created for it (outputs/runs), up to the working dir, while empty
    cwd = Path.cwd().resolve()
    for parent in path.resolve().parents:
        if parent == cwd or cwd not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def redirect_file_logs(old_dir: Path, new_dir: Path) -> None:
    """Undoes Hydra pointing its job log (genexp.log, opened lazily) at its own run dir: it goes to
    the run dir that is actually used (a run resumed elsewhere)."""
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == old_dir:
            h.close()
            h.baseFilename = str(new_dir / Path(h.baseFilename).name)


class HeldFileLogs:
    """Undoes Hydra logging into the run dir's genexp.log from the job's first line: the lines are
    held back until the run begins (`write`), so a start that is refused or interrupted leaves no
    genexp.log, and an earlier run's stays byte-identical. Lines still reach the console at once."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self.handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
        self.holding = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.holding:
            self.records.append(record)
        return not self.holding

    def __enter__(self) -> "HeldFileLogs":
        self.holding = True
        for h in self.handlers:
            h.addFilter(self)
        return self

    def write(self) -> None:
        """The run began: its dir is there; write what was held, and from now on log straight through."""
        if not self.holding:
            return
        self.holding = False
        for h in self.handlers:
            for r in self.records:
                if r.levelno >= h.level:
                    h.handle(r)
        self.records = []

    def __exit__(self, *exc: object) -> None:
        self.holding = False  # never begun: what was held is dropped with the job
        self.records = []
        for h in self.handlers:
            h.removeFilter(self)


DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")


def _raw(node: Any, key: str) -> Any:
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def blame_dir_interpolation(e: BaseException) -> str | None:
    """For an interpolation that fails while Hydra names the run dir, the one line that names the
    key the user wrote (`labels=${oc.env:NOPE}`), not `hydra.run.dir`: the dir's name uses the key,
    so Hydra resolves it first. None when the error is another one, or the dir's own."""
    from omegaconf.errors import OmegaConfBaseException

    parent = getattr(e, "parent_node", None)
    if not isinstance(e, OmegaConfBaseException) or getattr(e, "full_key", None) not in DIR_KEYS or parent is None:
        return None
    try:
        root = parent._get_root()
        raw = OmegaConf.to_container(root, resolve=False)
    except Exception:
        return None
    # ${labels}, ${dataset.name}: the config keys the dir's name is made of (not ${now:...} or ${hydra.job.num})
    for key in re.findall(r"\$\{([A-Za-z_][\w.]*)\}", str(_raw(raw, e.full_key))):
        if key.startswith("hydra."):
            continue
        try:
            OmegaConf.select(root, key, throw_on_resolution_failure=True)
        except Exception as inner:
            why = (str(getattr(inner, "msg", None) or inner).splitlines() or [""])[0]
            return (f"{key}={_raw(raw, key)} does not resolve ({why}): set {key} to a value, or define what it "
                    f"refers to (nothing was written)")
    return None
