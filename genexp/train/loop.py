"""Step-based semi-supervised training: one labelled and one unlabelled batch per step.

`train` keeps the run's record (result.json, whatever the outcome); `_train` is the loop: build
the session (the run's setup, then method, optimizer and evaluation EMA), `resume` it when asked,
then step, `log_terms` every log_every steps, `evaluate_and_log` every eval_every steps and `save` a
checkpoint every checkpoint_every.

metrics.jsonl holds two kinds of line: an evaluation's (it has test_acc; its train_* terms are means
since the previous evaluation) and, between evaluations, log_every's (step, lr, train_* terms: means
since the previous line of either kind, and elapsed_s; no accuracy). Readers that want evaluations
take the lines with test_acc.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import signal
import statistics
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from genexp.data.split import Split, drawn_split_seed
from genexp.errors import GenexpError
from genexp.methods.base import Batch, Method
from genexp.models.batchnorm import recalibrated
from genexp.runs.files import atomic_write, atomic_write_json, atomic_write_text
from genexp.runs.progress import Pace, TrainProgress
from genexp.runs.record import Status, append_jsonl, git_commit, versions
from genexp.train import distributed
from genexp.train.batches import train_step
from genexp.train.build import build_method, build_optimizer
from genexp.train.checkpoint import check_belongs, load_checkpoint, rng_state, run_id, save_checkpoint, set_rng_state
from genexp.train.compiled import LossFn, step_loss
from genexp.train.distributed import Dist
from genexp.train.interrupt import Interrupted, StopOnSignal
from genexp.train.search import test_shown
from genexp.train.setup import RunSetup, Subset, prepare, setup_run
from genexp.train.trackers import Trackers, chosen, open_trackers

log = logging.getLogger("genexp")
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  # the best-validation weights: what the reported test_acc was measured on


class Diverged(RuntimeError):
    pass


class RecordStale(GenexpError):
    """A run failed and its failure could not be recorded either (a full disk): result.json is stale.
    A GenexpError so that the CLI prints this message as it is; exit 1, as for any failed run."""

    exit_code = 1


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: Tensor, y: Tensor, mask: Tensor | None, amp: Any,
             preprocess: Any = None, d: Dist | None = None, batch_size: int = 1024,
             on_batch: Any = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode; under torchrun each rank scores a shard.
    `on_batch(done, total)` reports progress (examples of this rank's shard)."""
    d = d or Dist()
    was_training = model.training
    model.eval()
    correct, loss = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    idx = torch.arange(d.rank, len(y), d.world, device=x.device)
    for i in range(0, len(idx), batch_size):
        j = idx[i:i + batch_size]
        xb = x[j] if preprocess is None else preprocess(x[j])
        with amp():
            logits = model(xb, None if mask is None else mask[j])
        correct += (logits.argmax(-1) == y[j]).sum()
        loss += F.cross_entropy(logits.float(), y[j], reduction="sum")
        if on_batch is not None:
            on_batch(min(i + batch_size, len(idx)), len(idx))
    model.train(was_training)
    totals = distributed.all_sum(torch.stack([correct, loss]), d)
    n = max(len(y), 1)
    return totals[0].item() / n, totals[1].item() / n


class RunState:
    """What `train` has done to the run dir so far, for the caller's error handling."""

    def __init__(self) -> None:
        self.begun = False  # records written (result.json): a failure from here on is recorded
        self.trackers = Trackers()  # open trackers (rank 0): closed with the run's outcome, whatever it is


@dataclass
class Loop:
    """What the loop carries from step to step; checkpointed whole, as a plain dict."""

    step: int = 0  # where this session's loop starts (0, or the resumed checkpoint's step)
    best: dict = field(default_factory=lambda: {"val_acc": -1.0, "test_acc": None, "step": 0})
    sums: dict = field(default_factory=dict)  # the interval's training terms, summed on the device
    correct: Any = 0.0  # the interval's correct labelled predictions (a device tensor once stepped)
    seen: int = 0
    timed_steps: int = 0  # the step the current timing interval began at
    train_time: float = 0.0
    step_times: list = field(default_factory=list)  # ms per step, one per evaluation interval
    last: dict = field(default_factory=dict)  # the latest metrics.jsonl record
    wall_before: float = 0.0  # wall time of the run's earlier sessions (before a resume)
    # The last log_every line's step and `sums` then: the next line's terms are the difference, so
    # no step pays for a second accumulator. Stale once an evaluation restarts `sums` (timed_steps
    # passes log_from); a checkpoint from before log_every lacks both and starts at timed_steps.
    log_from: int = 0
    log_mark: dict = field(default_factory=dict)
    # best.pt's contents (rank 0), kept so that a checkpoint holds them: a run resumed from an
    # earlier checkpoint rewrites best.pt to match its `best`, whatever a lost session wrote.
    best_weights: dict | None = None

    def accumulate(self, out: Any, y_l: Tensor) -> None:
        """Add a step's terms on the device: nothing waits for the GPU until evaluation."""
        for k, v in {"loss": out.loss.detach(), **out.logs}.items():
            self.sums[k] = self.sums.get(k, 0) + v.float()
        self.correct = self.correct + (out.logits_l.argmax(-1) == y_l).sum()
        self.seen += len(y_l)

    def state_dict(self, **changes: Any) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, **changes}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Loop":
        # Keys a checkpoint may hold that the loop no longer carries (best_state: a copy of the
        # best weights that nothing read) are dropped.
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in known})


@dataclass
class Session:
    """One call of `train` on a run (new or resumed): what its loop trains with and writes to."""

    cfg: DictConfig
    run_dir: Path
    d: Dist
    device: torch.device
    run: RunSetup
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any  # torch.optim.swa_utils.AveragedModel, or None
    params: list
    started: float
    loss: LossFn  # the method's loss as each step calls it: compiled or not
    compiled: str  # why the loss is (not) compiled
    trackers: Trackers = field(default_factory=Trackers)  # logger= (rank 0; none on the others)

    @property
    def model(self) -> Any:
        return self.run.model

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"


def build_session(cfg: DictConfig, run_dir: Path, device: torch.device, d: Dist, split_file: Path | None,
                  started: float) -> Session:
    """The run's setup, then what only training needs: the method, the optimizer and the
    evaluation EMA (eval_ema > 0). Writes nothing."""
    run = setup_run(cfg, device, d, split_file)
    method = build_method(cfg)
    if method.text_only and run.train.mask is None:
        raise GenexpError(f"method={cfg.method.name} works on text models only: use a text dataset and model")
    run.source.require(method.views, cfg.method.name, cfg.dataset.name)
    method.setup(run.model, num_classes=run.data.num_classes, num_train=len(run.train), device=device,
                 num_unlabeled=len(run.split.unlabeled))
    optimizer, scheduler = build_optimizer(cfg, run.model)
    ema = None
    if cfg.get("eval_ema"):
        ema = torch.optim.swa_utils.AveragedModel(
            run.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.eval_ema), use_buffers=True)
    params = [p for p in run.model.parameters() if p.requires_grad]
    loss, why = step_loss(cfg.get("compile"), method, run.model, probe_batch(run),
                          None if run.step_flops is None else run.step_flops * cfg.steps)
    return Session(cfg, run_dir, d, device, run, method, optimizer, scheduler, ema, params, started, loss, why)


def probe_batch(run: RunSetup) -> Batch:
    """Two training rows as a batch of both kinds: what `Method.compiles` decides on."""
    x, mask = run.train.x[:2], None if run.train.mask is None else run.train.mask[:2]
    return Batch(x_l=x, y_l=run.train.y[:2], mask_l=mask, x_u=x, mask_u=mask)


def resume(s: Session, path: Path, preloaded: dict | None) -> Loop:
    """Restore every state the checkpoint at `path` holds (the caller's copy, loaded onto the CPU
    to check it, is reused for a CPU run): the loop continues exactly where it stopped."""
    ck = preloaded if preloaded is not None and s.device.type == "cpu" else load_checkpoint(path, s.device)
    check_belongs(ck, s.cfg, path)
    try:
        s.model.load_state_dict(ck["model"])
        s.optimizer.load_state_dict(ck["optimizer"])
        s.scheduler.load_state_dict(ck["scheduler"])
        if s.ema is not None:
            s.ema.load_state_dict(ck["ema"])
        s.method.load_state_dict(ck["method"])
        s.run.source.load_state_dict(ck["batches"][s.d.rank])
        set_rng_state(ck["rng"])
        loop = Loop.from_state_dict(ck["loop"])
    except (RuntimeError, KeyError, IndexError, ValueError, TypeError) as e:
        # Another architecture or genexp version: a refusal (nothing was written yet), not a crash.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise GenexpError(f"{path} does not fit this run's model, optimizer or method ({first[:200]}): it was not "
                          f"saved by this run; nothing was changed: restore the run's own checkpoint.pt, or start "
                          f"a new run") from None
    log.info("resuming %s at step %d of %d", s.run_dir, loop.step, s.cfg.steps)
    return loop


def open_records(s: Session, resumed_at: int | None) -> None:
    """metrics.jsonl and the trackers (rank 0), cut back to `resumed_at` for a resumed run: the
    steps after its checkpoint are run again."""
    if not s.d.is_main:
        return
    kept = []
    if resumed_at is not None and s.metrics_path.exists():
        kept = [ln for ln in s.metrics_path.read_text().splitlines() if json.loads(ln)["step"] <= resumed_at]
        atomic_write_text(s.metrics_path, "".join(ln + "\n" for ln in kept))
    s.trackers = open_trackers(s.cfg, s.run_dir, resumed_at, [json.loads(ln) for ln in kept])


def save(s: Session, loop: Loop, done: int) -> None:
    """Checkpoint after step `done` (rank 0 writes; every rank's sampler position is gathered)."""
    if "loss" in loop.sums:  # never save a diverged state
        total = distributed.all_sum(loop.sums["loss"].detach().reshape(()), s.d)
        if not math.isfinite(total.item()):
            raise Diverged(f"loss became non-finite by step {done}; lower optim.lr or the method's weight")
    per_rank = [s.run.source.state_dict()]
    if s.d.enabled:
        per_rank = [None] * s.d.world
        torch.distributed.all_gather_object(per_rank, s.run.source.state_dict())
    if s.d.is_main:
        save_checkpoint(s.run_dir / CHECKPOINT, {
            "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(), "ema": s.ema.state_dict() if s.ema is not None else None,
            "method": s.method.state_dict(), "batches": per_rank, "rng": rng_state(),
            "loop": loop.state_dict(step=done, wall_before=loop.wall_before + time.time() - s.started),
            "config": OmegaConf.to_container(s.cfg, resolve=True), "run_id": run_id(s.cfg)})


def save_best(s: Session, loop: Loop, model: torch.nn.Module) -> None:
    """best.pt: the evaluated weights at a new best validation (rank 0), written atomically and
    loadable with torch.load(weights_only=True). Keys without torch.compile's `_orig_mod.`, so that
    they load into a model built without compile=true."""
    if not s.d.is_main:
        return
    weights = {k.replace("_orig_mod.", ""): v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    loop.best_weights = {"model": weights, "step": loop.best["step"], "val_acc": loop.best["val_acc"],
                         "test_acc": loop.best["test_acc"], "run_id": run_id(s.cfg)}
    write_best(s.run_dir, loop.best_weights)


def write_best(run_dir: Path, best: dict) -> None:
    atomic_write(run_dir / BEST, lambda f: torch.save(best, f))


def close_interval(s: Session, loop: Loop, done: int, interval_start: float) -> tuple[dict[str, float], float]:
    """The interval's mean training terms and accuracy over all ranks; its time per step."""
    n_int = done - loop.timed_steps
    sums = {k: distributed.all_sum(v.detach().reshape(()), s.d) / s.d.world for k, v in loop.sums.items()}
    train_loss = {k: (v / n_int).item() for k, v in sums.items()}
    correct = distributed.all_sum(torch.as_tensor(loop.correct, device=s.device, dtype=torch.float32), s.d)
    train_acc = correct.item() / max(loop.seen * s.d.world, 1)
    if s.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - interval_start
    loop.train_time += elapsed
    loop.step_times.append(1000 * elapsed / n_int)
    loop.timed_steps = done
    if not all(math.isfinite(v) for v in train_loss.values()):
        raise Diverged(f"loss became non-finite at step {done} ({train_loss}); lower optim.lr or the method's weight")
    loop.sums, loop.correct, loop.seen = {}, 0.0, 0
    return train_loss, train_acc


def log_terms(s: Session, loop: Loop, done: int) -> None:
    """A log_every line between evaluations: the training terms' means since the previous line
    (log_every or evaluation), to metrics.jsonl and TensorBoard. Every rank takes part (the sums
    are all-reduced); rank 0 writes."""
    since = max(loop.log_from, loop.timed_steps)
    mark = loop.log_mark if loop.log_from > loop.timed_steps else {}
    window = {k: v.detach().reshape(()) - mark.get(k, 0) for k, v in loop.sums.items()}
    means = {k: (distributed.all_sum(v, s.d) / s.d.world / (done - since)).item() for k, v in window.items()}
    loop.log_from, loop.log_mark = done, dict(loop.sums)
    if not all(math.isfinite(v) for v in means.values()):
        raise Diverged(f"loss became non-finite by step {done} ({means}); lower optim.lr or the method's weight")
    if not s.d.is_main:
        return
    record = {"step": done, "lr": s.scheduler.get_last_lr()[0], **{f"train_{k}": v for k, v in means.items()},
              "elapsed_s": time.time() - s.started}
    append_jsonl(s.metrics_path, record)
    s.trackers.log(record)


def eval_line(s: Session, loop: Loop, done: int, train_loss: dict[str, float], pace: Pace) -> str:
    """The evaluation's log line: what the progress bar shows, for a log file (nohup, Slurm, a pipe)."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    terms = " ".join(f"train_{k} {v:.4f}" for k, v in train_loss.items())
    test = f" test_acc {pct(loop.last['test_acc'])}" if test_shown() else ""  # not in a search's trial
    return f"step {done}/{s.cfg.steps} | {terms} | val_acc {pct(loop.last['val_acc'])}{test} | {pace.text(done)}"


def evaluate_and_log(s: Session, loop: Loop, done: int, interval_start: float, progress: TrainProgress,
                     pace: Pace | None = None) -> None:
    """Close the training interval, evaluate val + test, log them, track the best val step."""
    train_loss, train_acc = close_interval(s, loop, done, interval_start)
    eval_model = s.method.eval_model(s.model) or (s.ema.module if s.ema is not None else s.model)
    distributed.average_buffers(eval_model, s.d)
    if s.cfg.get("bn_recalibrate"):
        eval_model = recalibrated(eval_model, s.run.source.x, torch.as_tensor(s.run.split.unlabeled),
                                  examples=s.cfg.bn_recalibrate, batch_size=s.cfg.unlabeled_batch_size,
                                  seed=s.cfg.seed, mask=s.run.source.mask, preprocess=s.run.data.preprocess)

    def score(name: str, subset: Subset) -> tuple[float, float]:
        return evaluate(eval_model, subset.x, subset.y, subset.mask, s.run.amp, s.run.data.preprocess, s.d,
                        on_batch=lambda i, n: progress.evaluating(name, i, n))

    has_val = len(s.run.val) > 0
    # Without a validation set (dataset.val_size=0) the final step is "best".
    val_acc, val_loss = score("val", s.run.val) if has_val else (None, None)
    test_acc, test_loss = score("test", s.run.test)
    loop.last = {"step": done, "lr": s.scheduler.get_last_lr()[0], "train_acc": train_acc,
                 **{f"train_{k}": v for k, v in train_loss.items()}, "val_acc": val_acc, "val_loss": val_loss,
                 "test_acc": test_acc, "test_loss": test_loss, "elapsed_s": time.time() - s.started}
    if s.d.is_main:
        append_jsonl(s.metrics_path, loop.last)
        s.trackers.log(loop.last)
    if not has_val or val_acc > loop.best["val_acc"]:
        loop.best = {"val_acc": val_acc, "test_acc": test_acc, "step": done}
        save_best(s, loop, eval_model)
    shown = {"val_acc": val_acc} if has_val else {}
    if test_shown():  # not in a search's trial (genexp.train.search): no one picks by test accuracy
        shown["test_acc"] = test_acc
    progress.update(done, loss=train_loss["loss"], train_acc=train_acc, **shown)
    if s.d.is_main and pace is not None:
        progress.note(log, "%s", eval_line(s, loop, done, train_loss, pace))


def log_setup(s: Session) -> None:
    cfg, split = s.cfg, s.run.split
    log.info("%s | %s | %s | labels=%d unlabelled=%d val=%d test=%d | %d params | %s%s", cfg.dataset.name,
             cfg.model.name, cfg.method.name, len(split.labeled), len(split.unlabeled), len(split.val),
             len(s.run.test), s.run.n_params, s.device, f" x{s.d.world}" if s.d.enabled else "")
    if s.device.type == "cpu" and s.run.threads is not None:
        log.info("cpu_threads=%d (%s)", s.run.threads.threads, s.run.threads.reason)
    log.info("compiled step: %s", s.compiled)


def stopping(s: Session, stop: StopOnSignal, done: int) -> bool:
    """Whether a signal asks to stop after step `done` (under torchrun: every rank agrees, at
    evaluation and checkpoint steps only, so that no step pays for a collective)."""
    if not s.d.enabled:
        return stop.signum is not None
    if done % s.cfg.eval_every and done % s.cfg.checkpoint_every:
        return False
    flag = torch.tensor(float(stop.signum or 0), device=s.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if flag.item() and stop.signum is None:
        stop.signum = int(flag.item())
    return bool(flag.item())


def _train(cfg: DictConfig, run_dir: Path, device: torch.device, base: dict[str, Any], resume_from: Path | None,
           preloaded: dict | None, d: Dist, begin: Any, stop: StopOnSignal | None, state: RunState) -> dict[str, Any]:
    started = time.time()
    log_every = log_every_of(cfg)
    chosen(cfg)  # a tracker whose package is missing is refused before anything is written
    if preloaded is not None and resume_from is not None:
        check_belongs(preloaded, cfg, resume_from)  # before the data is built: a foreign checkpoint is refused at once
    split_file = run_dir / "split.json" if resume_from is not None else None  # a resumed run keeps its split
    s = build_session(cfg, run_dir, device, d, split_file, started)
    base["data_fingerprint"] = data_fingerprint(s.run)
    if resume_from is not None:
        check_same_data(run_dir, base["data_fingerprint"])
    loop = Loop() if resume_from is None else resume(s, resume_from, preloaded)
    log_setup(s)
    if stop is not None and stop.signum is not None and not d.enabled:
        raise Interrupted(stop.signum, loop.step, cfg.steps)  # while setting up: nothing was written yet
    begin(s.run.split)
    if resume_from is not None and d.is_main and loop.best_weights is not None:
        write_best(run_dir, loop.best_weights)  # a session lost after the checkpoint may have written a later best
    open_records(s, loop.step if resume_from is not None else None)
    state.trackers = s.trackers
    host_loss = device.type == "cpu" and not d.enabled
    s.model.train()
    pace = Pace(cfg.steps, start=loop.step, before_s=loop.wall_before + time.time() - started)
    interval_start = time.perf_counter()
    with TrainProgress(cfg.steps, enabled=cfg.progress and d.is_main, start=loop.step) as progress:
        for step in range(loop.step, cfg.steps):
            batch = s.run.source.next(step, s.method.uses_unlabeled, s.method.views)
            out = train_step(s.model, s.method, s.optimizer, batch, amp=s.run.amp, params=s.params, d=d,
                             grad_clip=cfg.grad_clip, loss=s.loss)
            s.scheduler.step()
            if s.ema is not None:
                s.ema.update_parameters(s.model)
            loop.accumulate(out, batch.y_l)
            done = step + 1
            # On the CPU the loss is already in host memory: notice divergence at once (on a GPU, at
            # the next checkpoint or evaluation, without a per-step synchronisation).
            if host_loss and not math.isfinite(out.loss.item()):
                raise Diverged(f"loss became non-finite at step {done}; lower optim.lr or the method's weight")
            progress.tick(done)
            evaluating = done % cfg.eval_every == 0 or done == cfg.steps
            if log_every and done % log_every == 0 and not evaluating:
                log_terms(s, loop, done)
            if evaluating:
                evaluate_and_log(s, loop, done, interval_start, progress, pace)
                interval_start = time.perf_counter()
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save(s, loop, done)
            if stop is not None and done < cfg.steps and stopping(s, stop, done):
                if done % cfg.checkpoint_every:
                    save(s, loop, done)
                raise Interrupted(stop.signum or signal.SIGTERM, done, cfg.steps)
    result = result_record(s, loop, base)
    s.trackers.finish(result)
    return result


def log_every_of(cfg: DictConfig) -> int:
    """log_every, checked; 0 (only at evaluations) for a run dir recorded before the key existed,
    which goes on as it ran."""
    value = cfg.get("log_every")
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise GenexpError(f"log_every={value!r} must be an integer >= 0: set e.g. log_every=50, or 0 to log "
                          f"training terms only at evaluations")
    return value


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
    try:
        recorded = json.loads((run_dir / "result.json").read_text()).get("data_fingerprint")
    except (OSError, ValueError, AttributeError):
        return
    if recorded and recorded != fingerprint:
        raise GenexpError(f"the data of {run_dir} changed since the run started (data_fingerprint {recorded}, now "
                          f"{fingerprint}): restore the dataset it was started on, or start a new run; nothing "
                          f"was changed")


def result_record(s: Session, loop: Loop, base: dict[str, Any]) -> dict[str, Any]:
    """result.json of a completed run."""
    best, last, split, has_val = loop.best, loop.last, s.run.split, len(s.run.val) > 0
    return {**base, "status": Status.COMPLETED, "val_acc": best["val_acc"], "test_acc": best["test_acc"],
            "best_step": best["step"],
            # What test_acc is: at the step of best validation accuracy, or, without a validation
            # set (dataset.val_size=0), at the final step.
            "selection": "best_val" if has_val else "final (dataset.val_size=0: no validation set)",
            "val_acc_final": last["val_acc"], "test_acc_final": last["test_acc"],
            "train_acc_final": last["train_acc"],
            # The method's training terms over the last interval (train_sup, train_vat, ...): `genexp table
            # --metric train_consistency_final` compares them across runs.
            **{f"{k}_final": v for k, v in last.items() if k.startswith("train_") and k != "train_acc"},
            "n_labeled": len(split.labeled),
            "n_unlabeled": len(split.unlabeled), "n_val": len(split.val), "n_test": len(s.run.test),
            "n_params": s.run.n_params, **threads_record(s), **compile_record(s),
            "wall_time_s": time.time() - s.started + loop.wall_before,
            "train_time_s": loop.train_time, "step_time_ms": 1000 * loop.train_time / s.cfg.steps,
            "step_time_ms_median": statistics.median(loop.step_times) if loop.step_times else None}


def threads_record(s: Session) -> dict[str, Any]:
    """How many CPU threads the run used and why (cpu_threads=auto's choice): CPU runs only."""
    if s.device.type != "cpu" or s.run.threads is None:
        return {}
    return {"threads": s.run.threads.threads, "threads_reason": s.run.threads.reason}


def compile_record(s: Session) -> dict[str, Any]:
    """Whether the step was compiled and why; how many steps ran eagerly all the same."""
    return {"compiled": s.compiled, "eager_steps": getattr(s.loss, "eager_steps", None)}


def base_record(cfg: DictConfig, run_dir: Path, device: torch.device, d: Dist) -> dict[str, Any]:
    """The fields result.json holds from the start, whatever the run's outcome."""
    return {"status": Status.RUNNING, "dataset": cfg.dataset.name, "model": cfg.model.name, "method": cfg.method.name,
            "labels": cfg.labels, "seed": cfg.seed, "split_seed": cfg.split_seed,
            "split_seed_drawn": drawn_split_seed(cfg.split_seed, cfg.seed), "steps": cfg.steps,
            "experiment": cfg.get("experiment_name"), "tag": cfg.get("tag"), "device": str(device),
            "world_size": d.world, "git_commit": git_commit(), "versions": versions(), "run_dir": str(run_dir)}


def train(cfg: DictConfig, run_dir: Path, *, resume_from: Path | None = None, checkpoint: dict | None = None,
          d: Dist | None = None, on_begin: Any = None, stop: StopOnSignal | None = None,
          state: RunState | None = None) -> dict[str, Any]:
    """Train one run into `run_dir` (only rank 0 writes) and return its result record.

    With `resume_from` (a checkpoint; `checkpoint` its already loaded contents), continue exactly
    where it stopped: same batches, same noise, same metrics as if the run had never been
    interrupted. Nothing is written until the data, split, model, method and optimizer are
    built: a refused run (GenexpError) leaves `run_dir` as it was. `on_begin` is called (rank 0)
    just before the first records of a new run are written.
    """
    d = d or Dist()
    state = state or RunState()
    device = prepare(cfg, d)
    base = base_record(cfg, run_dir, device, d)
    started = time.time()

    def begin(split: Split | None) -> None:
        if d.is_main:
            if resume_from is None:
                run_dir.mkdir(parents=True, exist_ok=True)
                if on_begin is not None:
                    on_begin()
                OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
                if split is not None:
                    split.save(run_dir / "split.json")
            atomic_write_json(run_dir / "result.json", base)
        state.begun = True

    try:
        result = _train(cfg, run_dir, device, base, resume_from, checkpoint, d, begin, stop, state)
    except BaseException as e:
        state.trackers.close(stopped_record(e)["status"])
        if not state.begun and not isinstance(e, Interrupted):
            if resume_from is not None or isinstance(e, (GenexpError, KeyboardInterrupt)):
                raise  # refused, or stopped before anything was written: leave the dir as it was
            try:
                begin(None)  # a crash while setting up a new run is still a recorded (failed) run
            except OSError as w:
                raise stale_record(run_dir, e, w) from e
        if d.is_main and state.begun:
            record = {**base, **stopped_record(e), "wall_time_s": time.time() - started}
            try:
                atomic_write_json(run_dir / "result.json", record)
            except OSError as w:
                if isinstance(e, (Interrupted, KeyboardInterrupt)):
                    log.error("%s", stale_record(run_dir, e, w))  # the interrupt's own exit and message stand
                else:
                    raise stale_record(run_dir, e, w) from e
        raise
    if d.is_main:
        atomic_write_json(run_dir / "result.json", result)
    return result


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
