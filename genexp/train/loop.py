"""Step-based semi-supervised training: one labelled and one unlabelled batch per step.

`train` keeps the run's record (result.json, whatever the outcome: genexp.train.outcome); `_train`
is the loop: build the session (genexp.train.session), `resume` it when asked, then step,
`log_terms` every log_every steps, `evaluate_and_log` every eval_every steps and `save` a
checkpoint every checkpoint_every.

metrics.jsonl holds two kinds of line: an evaluation's (it has test_acc; its train_* terms are means
since the previous evaluation) and, between evaluations, log_every's (step, lr, train_* terms: means
since the previous line of either kind, and elapsed_s; no accuracy). Readers that want evaluations
take the lines with test_acc.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from pathlib import Path
from typing import Iterator

import torch
from omegaconf import DictConfig

from genexp.errors import GenexpError
from genexp.models.batchnorm import recalibrated
from genexp.runs.progress import Pace, TrainProgress
from genexp.runs.record import RunRecord, append_jsonl
from genexp.train import distributed
from genexp.train.batches import train_step
from genexp.train.checkpoint import check_belongs
from genexp.train.distributed import Dist
from genexp.train.evaluation import evaluate
from genexp.train.interrupt import Interrupted, StopOnSignal, stop_at_once
from genexp.train.outcome import Recorder, RecordStale, RunState, completed_record
from genexp.train.saving import Diverged, save, save_best, write_best
from genexp.train.session import Loop, Session, build_session, log_setup, open_records, resume
from genexp.train.setup import Subset, prepare
from genexp.train.trackers import chosen

__all__ = ["Diverged", "Loop", "RecordStale", "RunState", "evaluate", "train"]  # what callers import from here

log = logging.getLogger("genexp")
def close_interval(s: Session, loop: Loop, done: int, interval_start: float) -> dict:
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
    return {"train_loss": train_loss, "train_acc": train_acc}


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
    test = f" test_acc {pct(loop.last['test_acc'])}" if s.show_test else ""  # not in a search's trial
    return f"step {done}/{s.cfg.steps} | {terms} | val_acc {pct(loop.last['val_acc'])}{test} | {pace.text(done)}"


@contextlib.contextmanager
def stoppable(s: Session, loop: Loop, done: int, closed: dict) -> Iterator[None]:
    """An evaluation's scoring (writes nothing) stops at once on a signal, in one process: the
    checkpoint at `done` then holds the evaluation as pending (`closed`: its interval's training
    terms), run first on resume, so that the resumed run matches an uninterrupted one."""
    if s.d.enabled:  # every rank takes part in the scoring's collectives: stop at the step boundary
        yield
        return
    try:
        with stop_at_once(s.cfg.steps, done):
            yield
    except Interrupted:
        loop.pending = closed
        save(s, loop, done)
        raise


def evaluate_and_log(s: Session, loop: Loop, done: int, closed: dict, progress: TrainProgress,
                     pace: Pace | None = None) -> None:
    """Evaluate val + test after step `done` (`closed`: the interval's training terms), log them,
    track the best val step."""
    train_loss, train_acc = closed["train_loss"], closed["train_acc"]
    eval_model = s.method.eval_model(s.model) or (s.ema.module if s.ema is not None else s.model)
    distributed.average_buffers(eval_model, s.d)

    def score(name: str, subset: Subset) -> tuple[float, float]:
        return evaluate(eval_model, subset.x, subset.y, subset.mask, s.run.amp, s.run.data.preprocess, s.d,
                        on_batch=lambda i, n: progress.evaluating(name, i, n))

    has_val = len(s.run.val) > 0
    with stoppable(s, loop, done, closed):
        if s.cfg.get("bn_recalibrate"):
            eval_model = recalibrated(eval_model, s.run.source.x, torch.as_tensor(s.run.split.unlabeled),
                                      examples=s.cfg.bn_recalibrate, batch_size=s.cfg.unlabeled_batch_size,
                                      seed=s.cfg.seed, mask=s.run.source.mask, preprocess=s.run.data.preprocess)
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
    if s.show_test:  # not in a search's trial: no one picks by test accuracy
        shown["test_acc"] = test_acc
    progress.update(done, loss=train_loss["loss"], train_acc=train_acc, **shown)
    if s.d.is_main and pace is not None:
        progress.note(log, "%s", eval_line(s, loop, done, train_loss, pace))


def checkpoint_due(cfg: DictConfig, done: int) -> bool:
    """Whether the loop saves a checkpoint after step `done`: every checkpoint_every, and the last."""
    return done % cfg.checkpoint_every == 0 or done == cfg.steps


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


def _train(cfg: DictConfig, run_dir: Path, device: torch.device, recorder: Recorder, resume_from: Path | None,
           preloaded: dict | None, d: Dist, stop: StopOnSignal | None, state: RunState, show_test: bool) -> RunRecord:
    started = time.time()
    log_every = log_every_of(cfg)
    chosen(cfg)  # a tracker whose package is missing is refused before anything is written
    if preloaded is not None and resume_from is not None:
        check_belongs(preloaded, cfg, resume_from)  # before the data is built: a foreign checkpoint is refused at once
    split_file = run_dir / "split.json" if resume_from is not None else None  # a resumed run keeps its split
    s = build_session(cfg, run_dir, device, d, split_file, started)
    s.show_test = show_test
    recorder.fingerprint(s.run)
    loop = Loop() if resume_from is None else resume(s, resume_from, preloaded)
    log_setup(s)
    if stop is not None and stop.signum is not None and not d.enabled:
        raise Interrupted(stop.signum, loop.step, cfg.steps)  # while setting up: nothing was written yet
    recorder.begin(s.run.split)
    if resume_from is not None and d.is_main and loop.best_weights is not None:
        write_best(run_dir, loop.best_weights)  # a session lost after the checkpoint may have written a later best
    # A pending evaluation's line is written again: cut back to the step before it.
    open_records(s, None if resume_from is None else loop.step - (loop.pending is not None))
    state.trackers = s.trackers
    host_loss = device.type == "cpu" and not d.enabled
    s.model.train()
    pace = Pace(cfg.steps, start=loop.step, before_s=loop.wall_before + time.time() - started)
    with TrainProgress(cfg.steps, enabled=cfg.progress and d.is_main, start=loop.step) as progress:
        if loop.pending is not None:  # the evaluation a signal stopped: first, as it would have run
            closed, loop.pending = loop.pending, None
            evaluate_and_log(s, loop, loop.step, closed, progress, pace)
            if checkpoint_due(cfg, loop.step):  # as after any evaluation: the last step's leaves none pending
                save(s, loop, loop.step)
        interval_start = time.perf_counter()
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
                evaluate_and_log(s, loop, done, close_interval(s, loop, done, interval_start), progress, pace)
                interval_start = time.perf_counter()
            if checkpoint_due(cfg, done):
                save(s, loop, done)
            if stop is not None and done < cfg.steps and stopping(s, stop, done):
                if not checkpoint_due(cfg, done):
                    save(s, loop, done)
                raise Interrupted(stop.signum or signal.SIGTERM, done, cfg.steps)
    result = completed_record(recorder.base, s, loop)
    s.trackers.finish(result)
    return result


def train(cfg: DictConfig, run_dir: Path, *, resume_from: Path | None = None, checkpoint: dict | None = None,
          d: Dist | None = None, stop: StopOnSignal | None = None, state: RunState | None = None,
          checked: bool = False, show_test: bool = True) -> RunRecord:
    """Train one run into `run_dir` (only rank 0 writes) and return its result record.

    With `resume_from` (a checkpoint; `checkpoint` its already loaded contents), continue exactly
    where it stopped: same batches, same noise, same metrics as if the run had never been
    interrupted. Nothing is written until the data, split, model, method and optimizer are
    built: a refused run (GenexpError) leaves `run_dir` as it was. `state` (genexp.train.outcome.RunState)
    tells the caller how far the run got, and its `on_begin` hook is called just before the first
    records are written. `checked`: the caller has run `setup.validate_config` on `cfg` (the
    command does, before it claims a run dir), so it is not checked twice. `show_test=False` (a
    search's trial): what the run prints shows validation accuracy alone; its records keep test's.
    """
    d = d or Dist()
    state = state or RunState()
    device = prepare(cfg, d, checked=checked)
    recorder = Recorder(cfg, run_dir, device, d, state, resume_from)
    try:
        result = _train(cfg, run_dir, device, recorder, resume_from, checkpoint, d, stop, state, show_test)
    except BaseException as e:
        recorder.failed(e)
        raise
    recorder.completed(result)
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


















