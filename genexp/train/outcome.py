"""A training run's record, whatever its outcome: result.json from the first write (`begin`: the
run's identity, status running) to the last (completed, failed or interrupted), written through
the one schema (genexp.runs.record.RunRecord). A failed run is a recorded result, not a lost one;
a run refused before anything was written leaves its dir as it was."""
from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from genexp.data.split import Split, drawn_split_seed
from genexp.errors import GenexpError
from genexp.runs.record import RunRecord, Status, cpu_name, git_commit, read_record, versions, write_record
from genexp.train.distributed import Dist
from genexp.train.interrupt import Interrupted
from genexp.train.setup import RunSetup
from genexp.train.trackers import Trackers

if TYPE_CHECKING:
    from genexp.train.session import Loop, Session

log = logging.getLogger("genexp")


class RecordStale(GenexpError):
    """A run failed and its failure could not be recorded either (a full disk): result.json is stale.
    A GenexpError so that the CLI prints this message as it is; exit 1, as for any failed run."""

    exit_code = 1


class RunState:
    """What `train` has done to the run dir so far, for the caller's error handling, and the one
    hook a caller has on it: `on_begin(new)`, called on every rank just before the run's first
    records are written (`new`: not resumed from a checkpoint; rank 0 has made the dir)."""

    def __init__(self, on_begin: Callable[[bool], None] | None = None) -> None:
        self.begun = False  # records written (result.json): a failure from here on is recorded
        self.trackers = Trackers()  # open trackers (rank 0): closed with the run's outcome, whatever it is
        self.on_begin = on_begin


class Recorder:
    """result.json of one call of `train` (rank 0 writes): `begin` writes the run's first records,
    `failed` the outcome of a run that stopped, `completed` the record of one that finished."""

    def __init__(self, cfg: DictConfig, run_dir: Path, device: torch.device, d: Dist, state: RunState,
                 resume_from: Path | None) -> None:
        self.cfg, self.run_dir, self.d, self.state = cfg, run_dir, d, state
        self.resume_from = resume_from
        self.base = base_record(cfg, run_dir, device, d)
        self.started = time.time()

    def fingerprint(self, run: RunSetup) -> None:
        """Record the data's fingerprint; a resumed run is refused if its data changed."""
        self.base = self.base.with_values(data_fingerprint=data_fingerprint(run))
        if self.resume_from is not None:
            check_same_data(self.run_dir, self.base.identity.data_fingerprint)

    def begin(self, split: Split | None) -> None:
        """The run's first records: config.yaml, split.json (a new run) and result.json (running)."""
        new = self.resume_from is None
        if new and self.d.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        hook, self.state.on_begin = self.state.on_begin, None  # once, even if a write below fails and failed() begins again
        if hook is not None:
            hook(new)
        if self.d.is_main:
            if new:
                OmegaConf.save(self.cfg, self.run_dir / "config.yaml", resolve=True)
                if split is not None:
                    split.save(self.run_dir / "split.json")
            write_record(self.run_dir, self.base)
        self.state.begun = True

    def completed(self, record: RunRecord) -> None:
        if self.d.is_main:
            write_record(self.run_dir, record)

    def failed(self, e: BaseException) -> None:
        """Record why the run stopped; the caller raises `e` again. Raises RecordStale when the
        failure cannot be recorded (a full disk)."""
        stopped = stopped_record(e)
        self.state.trackers.close(stopped["status"])
        if not self.state.begun and not isinstance(e, Interrupted):
            if self.resume_from is not None or isinstance(e, (GenexpError, KeyboardInterrupt)):
                return  # refused, or stopped before anything was written: leave the dir as it was
            try:
                self.begin(None)  # a crash while setting up a new run is still a recorded (failed) run
            except OSError as w:
                raise stale_record(self.run_dir, e, w) from e
        if self.d.is_main and self.state.begun:
            record = self.base.with_values(**stopped, wall_time_s=time.time() - self.started)
            try:
                write_record(self.run_dir, record)
            except OSError as w:
                if isinstance(e, (Interrupted, KeyboardInterrupt)):
                    log.error("%s", stale_record(self.run_dir, e, w))  # the interrupt's own exit and message stand
                else:
                    raise stale_record(self.run_dir, e, w) from e


def base_record(cfg: DictConfig, run_dir: Path, device: torch.device, d: Dist) -> RunRecord:
    """The fields result.json holds from the start, whatever the run's outcome."""
    return RunRecord().with_values(
        status=Status.RUNNING, dataset=cfg.dataset.name, model=cfg.model.name, method=cfg.method.name,
        labels=cfg.labels, seed=cfg.seed, split_seed=cfg.split_seed,
        split_seed_drawn=drawn_split_seed(cfg.split_seed, cfg.seed), steps=cfg.steps,
        experiment=cfg.get("experiment_name"), tag=cfg.get("tag"), device=str(device), world_size=d.world,
        git_commit=git_commit(), versions=versions(), cpu=cpu_name(), run_dir=str(run_dir))


def completed_record(base: RunRecord, s: Session, loop: Loop) -> RunRecord:
    """result.json of a completed run."""
    best, last, split, has_val = loop.best, loop.last, s.run.split, len(s.run.val) > 0
    return base.with_values(
        status=Status.COMPLETED, val_acc=best["val_acc"], test_acc=best["test_acc"], best_step=best["step"],
        # What test_acc is: at the step of best validation accuracy, or, without a validation
        # set (dataset.val_size=0), at the final step.
        selection="best_val" if has_val else "final (dataset.val_size=0: no validation set)",
        val_acc_final=last["val_acc"], test_acc_final=last["test_acc"], train_acc_final=last["train_acc"],
        # The method's training terms over the last interval (train_sup, train_vat, ...): `genexp table
        # --metric train_consistency_final` compares them across runs.
        **{f"{k}_final": v for k, v in last.items() if k.startswith("train_") and k != "train_acc"},
        n_labeled=len(split.labeled), n_unlabeled=len(split.unlabeled), n_val=len(split.val),
        n_test=len(s.run.test), n_params=s.run.n_params, **threads_record(s), **compile_record(s),
        wall_time_s=time.time() - s.started + loop.wall_before,
        train_time_s=loop.train_time, step_time_ms=1000 * loop.train_time / s.cfg.steps,
        step_time_ms_median=statistics.median(loop.step_times) if loop.step_times else None)


def threads_record(s: Session) -> dict[str, Any]:
    """How many CPU threads the run used and why (cpu_threads=auto's choice): CPU runs only."""
    if s.device.type != "cpu" or s.run.threads is None:
        return {}
    return {"threads": s.run.threads.threads, "threads_reason": s.run.threads.reason}


def compile_record(s: Session) -> dict[str, Any]:
    """Whether the step was compiled and why; how many steps ran eagerly all the same."""
    return {"compiled": s.compiled, "eager_steps": getattr(s.loss, "eager_steps", None)}


def stale_record(run_dir: Path, e: BaseException, w: OSError) -> RecordStale:
    """The failure `e` that could not be recorded because writing failed too (`w`: a full disk)."""
    first = (f"{type(e).__name__}: {e}".splitlines() or [""])[0][:300]
    path = run_dir / "result.json"
    state = f"{path} is stale (it does not say the run stopped)" if path.exists() else f"{path} could not be written"
    return RecordStale(f"run failed: {first}; recording that failed too ({w.strerror or w}): {state}; free space "
                       f"under {run_dir}, then resume it or start it again")


def stopped_record(e: BaseException) -> dict[str, Any]:
    """What result.json says of a run that stopped before completing: a failed run is a
    recorded result, not a lost one."""
    if isinstance(e, Interrupted):
        return {"status": Status.INTERRUPTED, "step": e.step, "signal": e.name, "checkpoint_step": e.step,
                "reason": f"{e.name} at step {e.step} of {e.total}: checkpoint saved, resume continues from it"}
    if isinstance(e, KeyboardInterrupt):
        reason = "stopped without saving (second signal): resume continues from the last periodic checkpoint"
        return {"status": Status.INTERRUPTED, "reason": reason}
    return {"status": Status.FAILED, "reason": (f"{type(e).__name__}: {e}".splitlines() or [""])[0][:500]}


def data_fingerprint(run: RunSetup) -> str:
    """A short SHA-256 of the data as the model receives it (inputs, labels, text masks; before
    per-batch preprocessing). Runs whose data differ in any byte get different fingerprints, which
    `genexp table` keeps apart. The split is left out: config keys (split_seed, labels,
    labeled_strategy, val_size) decide it, and with split_seed=per_seed the draws are replicates
    of one experiment, not different data. Computed once per session (MNIST's 47 MB take a
    fraction of a second)."""
    h = hashlib.sha256()
    data = run.data
    inputs = ("x_train", "mask_train", "x_test", "mask_test")
    frozen = data.frozen_features
    if frozen is not None:
        # Encoded features differ in their last bits between devices: name them by what they were
        # encoded from (texts, encoder, settings), so a rebuilt cache is the same data.
        h.update(json.dumps(frozen, sort_keys=True, default=str).encode())
    for name in ("x_train", "y_train", "mask_train", "x_test", "y_test", "mask_test"):
        if frozen is not None and name in inputs:
            continue
        t = getattr(data, name)
        if not isinstance(t, Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def check_same_data(run_dir: Path, fingerprint: str) -> None:
    """Refuse to resume a run on data that changed since it started (an edited dataset file):
    its metrics would mix two datasets under one record."""
    record = read_record(run_dir)
    recorded = record.identity.data_fingerprint if record is not None else None
    if recorded and recorded != fingerprint:
        raise GenexpError(f"the data of {run_dir} changed since the run started (data_fingerprint {recorded}, now "
                          f"{fingerprint}): restore the dataset it was started on, or start a new run; nothing "
                          f"was changed")
