"""Step-based semi-supervised training: one labelled and one unlabelled batch per step."""
from __future__ import annotations

import json
import logging
import math
import random
import signal
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from genexp import distributed
from genexp.build import build_dataset, build_method, build_model, build_optimizer
from genexp.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from genexp.data.split import Split, make_split
from genexp.distributed import Dist
from genexp.errors import GenexpError
from genexp.interrupt import Interrupted, StopOnSignal
from genexp.progress import TrainProgress
from genexp.records import append_jsonl, atomic_write_json, atomic_write_text, git_commit, versions
from genexp.step import BatchSource, train_step

log = logging.getLogger("genexp")
CHECKPOINT = "checkpoint.pt"


class Diverged(RuntimeError):
    pass


def resolve_device(name: str, d: Dist | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenexpError(f"device={name} but no CUDA device is visible: set device=cpu or device=auto")
    if d is not None and d.enabled and name.startswith("cuda"):
        return distributed.local_device()
    return torch.device(name)


def place_model(model: torch.nn.Module, device: torch.device, input_shape: tuple[int, ...]) -> tuple[Any, bool]:
    """Move to the device; image models on GPU go channels_last with cuDNN autotuning."""
    model = model.to(device)
    channels_last = device.type == "cuda" and len(input_shape) == 3
    if channels_last:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    return model, channels_last


def autocast_for(device: torch.device, amp: Any) -> Any:
    """bf16 autocast on GPU when amp is auto/bf16/true; a no-op context on CPU."""
    if device.type == "cuda" and amp in ("auto", "bf16", True):
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


DEVICE_NAMES = "auto, cpu, cuda, cuda:<index> or mps"


def _non_finite(node: Any, prefix: str = "") -> str | None:
    """The first key holding a NaN or infinite number, or None."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return prefix if isinstance(node, float) and not math.isfinite(node) else None
    for k, v in items:
        found = _non_finite(v, f"{prefix}.{k}" if prefix else str(k))
        if found is not None:
            return found
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_config(cfg: DictConfig) -> None:
    """Input errors found from the config alone (before any file is written): one line each."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # an interpolation that does not resolve
        raise GenexpError(f"config does not resolve: {(str(e).splitlines() or [''])[0]}") from None
    bad = _non_finite(resolved)
    if bad is not None:
        raise GenexpError(f"{bad}={OmegaConf.select(cfg, bad)} is not a finite number: set {bad} to a finite value")
    for key in ("seed", "split_seed"):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise GenexpError(f"{key}={value!r} must be a non-negative integer: set e.g. {key}=0")
    for key in ("ema_decay", "grad_clip"):
        if cfg.get(key) is not None and not _is_number(cfg[key]):
            raise GenexpError(f"{key}={cfg[key]!r} must be a number")
    for key in ("lr", "weight_decay"):
        value = cfg.optim.get(key)
        if value is not None and not _is_number(value):
            raise GenexpError(f"optim.{key}={value!r} must be a number: set e.g. optim.{key}=0.001")
    device = cfg.device
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda", "mps")
                                           or (device.startswith("cuda:") and device[5:].isdigit())):
        raise GenexpError(f"device={device!r} is not a device genexp runs on: use {DEVICE_NAMES}")
    for key in ("steps", "batch_size", "unlabeled_batch_size", "eval_every", "checkpoint_every"):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise GenexpError(f"{key}={value} must be a positive integer: set {key}=<int > 0>")
    labels = cfg.labels
    if not (labels == "all" or (isinstance(labels, int) and not isinstance(labels, bool))):
        raise GenexpError(f"labels={labels!r} must be an integer or 'all': set e.g. labels=100")
    if cfg.ema_decay is not None and not 0 <= cfg.ema_decay < 1:
        raise GenexpError(f"ema_decay={cfg.ema_decay} must be in [0, 1): set ema_decay=0 (off) or e.g. 0.999")


def set_cpu_threads(cfg: DictConfig, device: torch.device, n_params: int | None = None) -> None:
    """`cpu_threads`: an int (applied at once), or auto = one intra-op thread for models under 5M
    parameters on CPU (applied once `n_params` is known)."""
    threads = cfg.get("cpu_threads")
    if threads not in (None, "auto"):
        torch.set_num_threads(int(threads))
    elif threads == "auto" and device.type == "cpu" and n_params is not None and n_params < 5e6:
        # Small models are a stream of tiny ops: extra intra-op threads only add synchronisation,
        # and when another process holds a core their spin-waits made steps 10-100x slower.
        torch.set_num_threads(1)


class RunState:
    """What `train` has done to the run dir so far, for the caller's error handling."""

    def __init__(self) -> None:
        self.begun = False  # records written (result.json): a failure from here on is recorded


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
    validate_config(cfg)
    device = resolve_device(cfg.device, d)
    set_cpu_threads(cfg, device)  # before the dataset: preprocessing (ZCA) runs under the limit too
    seed_everything(cfg.seed)
    base = {"status": "running", "dataset": cfg.dataset.name, "model": cfg.model.name, "method": cfg.method.name,
            "labels": cfg.labels, "seed": cfg.seed, "split_seed": cfg.split_seed, "steps": cfg.steps,
            "experiment": cfg.get("experiment_name"), "tag": cfg.get("tag"), "device": str(device), "world_size": d.world,
            "git_commit": git_commit(), "versions": versions(), "run_dir": str(run_dir)}
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
        result = _train(cfg, run_dir, device, base, resume_from, checkpoint, d, begin, stop)
    except Interrupted as e:
        if state.begun and d.is_main:
            atomic_write_json(run_dir / "result.json", {
                **base, "status": "interrupted", "step": e.step, "signal": e.name, "checkpoint_step": e.step,
                "reason": f"{e.name} at step {e.step} of {e.total}: checkpoint saved, resume continues from it",
                "wall_time_s": time.time() - started})
        raise
    except BaseException as e:
        if not state.begun:
            if resume_from is not None or isinstance(e, (GenexpError, KeyboardInterrupt)):
                raise  # refused, or stopped before anything was written: leave the dir as it was
            begin(None)  # a crash while setting up a new run is still a recorded (failed) run
        # A failed run is a recorded result, not a lost one.
        if isinstance(e, KeyboardInterrupt):
            status, reason = "interrupted", "stopped without saving (second signal): resume continues from the " \
                                            "last periodic checkpoint"
        else:
            status, reason = "failed", f"{type(e).__name__}: {e}"
        if d.is_main:
            atomic_write_json(run_dir / "result.json", {**base, "status": status,
                                                        "reason": (reason.splitlines() or [""])[0][:500],
                                                        "wall_time_s": time.time() - started})
        raise
    if d.is_main:
        atomic_write_json(run_dir / "result.json", result)
    return result


def _train(cfg: DictConfig, run_dir: Path, device: torch.device, base: dict[str, Any], resume_from: Path | None,
           preloaded: dict | None, d: Dist, begin: Any, stop: StopOnSignal | None) -> dict[str, Any]:
    started = time.time()
    data = build_dataset(cfg)
    if resume_from is not None and (run_dir / "split.json").exists():
        split = Split.load(run_dir / "split.json")
    else:
        split = make_split(data.y_train.numpy(), cfg.labels, num_classes=data.num_classes,
                           split_seed=cfg.split_seed, val_size=data.val_size, strategy=cfg.labeled_strategy,
                           unlabeled_includes_labeled=cfg.unlabeled_includes_labeled)
    for key in ("batch_size", "unlabeled_batch_size"):
        if cfg[key] % d.world:
            raise GenexpError(f"{key}={cfg[key]} is not divisible by the {d.world} processes: use a multiple")
    x, y = data.x_train.to(device), data.y_train.to(device)
    mask = None if data.mask_train is None else data.mask_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    mask_test = None if data.mask_test is None else data.mask_test.to(device)
    has_val = len(split.val) > 0
    val_idx = torch.as_tensor(split.val, device=device, dtype=torch.long)
    x_val, y_val = x[val_idx], y[val_idx]
    mask_val = None if mask is None else mask[val_idx]

    model, channels_last = place_model(build_model(cfg, data), device, data.input_shape)
    n_params = sum(p.numel() for p in model.parameters())
    set_cpu_threads(cfg, device, n_params)
    if d.enabled and device.type == "cuda" and cfg.get("sync_bn", True):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    method = build_method(cfg)
    if method.text_only and mask is None:
        raise GenexpError(f"method={cfg.method.name} works on text models only: use a text dataset and model")
    method.setup(model, num_classes=data.num_classes, num_train=len(y), device=device)
    optimizer, scheduler = build_optimizer(cfg, model)
    ema = None
    if cfg.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    if cfg.get("compile", False):
        # After the EMA copy, which must not share the compiled function. Methods call
        # embed/head directly (perturbations enter between them), so head is what is compiled.
        model.head = torch.compile(model.head)
    amp = autocast_for(device, cfg.amp)
    params = [p for p in model.parameters() if p.requires_grad]

    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + 3 + d.rank)
    source = BatchSource(x, y, mask, torch.as_tensor(split.labeled), torch.as_tensor(split.unlabeled),
                         batch_size=cfg.batch_size, unlabeled_batch_size=cfg.unlabeled_batch_size, seed=cfg.seed,
                         generator=gen, preprocess=data.preprocess, augment=data.augment, d=d,
                         channels_last=channels_last)

    # Everything the loop carries from step to step; checkpointed whole.
    st: dict[str, Any] = {"step": 0, "best": {"val_acc": -1.0, "test_acc": None, "step": 0}, "best_state": None,
                          "sums": {}, "correct": 0.0, "seen": 0, "train_time": 0.0, "step_times": [], "last": {}}
    if resume_from is not None:
        # The caller's copy was loaded onto the CPU to check it: reused only for a CPU run.
        ck = preloaded if preloaded is not None and device.type == "cpu" else load_checkpoint(resume_from, device)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        method.load_state_dict(ck["method"])
        source.load_state_dict(ck["batches"][d.rank])
        set_rng_state(ck["rng"])
        st = ck["loop"]
        log.info("resuming %s at step %d of %d", run_dir, st["step"], cfg.steps)
    log.info("%s | %s | %s | labels=%d unlabelled=%d val=%d test=%d | %d params | %s%s", cfg.dataset.name,
             cfg.model.name, cfg.method.name, len(split.labeled), len(split.unlabeled), len(split.val),
             len(y_test), n_params, device, f" x{d.world}" if d.enabled else "")

    if stop is not None and stop.signum is not None and not d.enabled:
        raise Interrupted(stop.signum, st["step"], cfg.steps)  # while setting up: nothing was written yet
    begin(split)
    writer = None
    metrics_path = run_dir / "metrics.jsonl"
    if d.is_main:
        from torch.utils.tensorboard import SummaryWriter
        if resume_from is not None and metrics_path.exists():
            kept = [ln for ln in metrics_path.read_text().splitlines() if json.loads(ln)["step"] <= st["step"]]
            atomic_write_text(metrics_path, "".join(ln + "\n" for ln in kept))
        writer = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=st["step"] or None)

    def checkpoint(done: int) -> None:
        if "loss" in st["sums"]:  # never save a diverged state
            total = distributed.all_sum(st["sums"]["loss"].detach().reshape(()), d)
            if not math.isfinite(total.item()):
                raise Diverged(f"loss became non-finite by step {done}; lower optim.lr or the method's weight")
        per_rank = [source.state_dict()]
        if d.enabled:
            per_rank = [None] * d.world
            torch.distributed.all_gather_object(per_rank, source.state_dict())
        if d.is_main:
            save_checkpoint(run_dir / CHECKPOINT, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "method": method.state_dict(), "batches": per_rank, "rng": rng_state(),
                "loop": {**st, "step": done, "wall_before": st.get("wall_before", 0.0) + time.time() - started},
                "config": OmegaConf.to_container(cfg, resolve=True)})

    def evaluate_and_log(done: int, interval_start: float) -> None:
        """Reduce the interval's training sums, evaluate val + test, log, track the best."""
        n_int = done - st.get("timed_steps", 0)
        sums = {k: distributed.all_sum(v.detach().reshape(()), d) / d.world for k, v in st["sums"].items()}
        train_loss = {k: (v / n_int).item() for k, v in sums.items()}
        correct = distributed.all_sum(torch.as_tensor(st["correct"], device=device, dtype=torch.float32), d)
        train_acc = correct.item() / max(st["seen"] * d.world, 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - interval_start
        st["train_time"] += elapsed
        st["step_times"].append(1000 * elapsed / n_int)
        st["timed_steps"] = done
        if not all(math.isfinite(v) for v in train_loss.values()):
            raise Diverged(f"loss became non-finite at step {done} ({train_loss}); lower optim.lr or the method's weight")
        default = ema.module if ema is not None else model
        eval_model = method.eval_model(model) or default
        distributed.average_buffers(eval_model, d)
        val_acc, val_loss = None, None  # no validation set (dataset.val_size=0): the final step is "best"
        if has_val:
            val_acc, val_loss = evaluate(eval_model, x_val, y_val, mask_val, amp, data.preprocess, d,
                                         on_batch=lambda i, n: progress.evaluating("val", i, n))
        test_acc, test_loss = evaluate(eval_model, x_test, y_test, mask_test, amp, data.preprocess, d,
                                       on_batch=lambda i, n: progress.evaluating("test", i, n))
        last = {"step": done, "lr": scheduler.get_last_lr()[0], "train_acc": train_acc,
                **{f"train_{k}": v for k, v in train_loss.items()}, "val_acc": val_acc, "val_loss": val_loss,
                "test_acc": test_acc, "test_loss": test_loss, "elapsed_s": time.time() - started}
        st["last"] = last
        if d.is_main:
            append_jsonl(metrics_path, last)
            for k, v in last.items():
                if k != "step" and v is not None:
                    writer.add_scalar(k, v, done)
        if not has_val:
            st["best"] = {"val_acc": None, "test_acc": test_acc, "step": done}
        elif val_acc > st["best"]["val_acc"]:
            st["best"] = {"val_acc": val_acc, "test_acc": test_acc, "step": done}
            st["best_state"] = {k: v.detach().to("cpu", copy=True) for k, v in eval_model.state_dict().items()}
        shown = {"val_acc": val_acc} if has_val else {}
        progress.update(done, loss=train_loss["loss"], train_acc=train_acc, **shown, test_acc=test_acc)
        st["sums"], st["correct"], st["seen"] = {}, 0.0, 0

    def stopping(done: int) -> bool:
        """Whether a signal asks to stop after step `done` (under torchrun: every rank agrees, at
        evaluation and checkpoint steps only, so that no step pays for a collective)."""
        if not d.enabled:
            return stop.signum is not None
        if done % cfg.eval_every and done % cfg.checkpoint_every:
            return False
        flag = torch.tensor(float(stop.signum or 0), device=device)
        if d.enabled:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and stop.signum is None:
            stop.signum = int(flag.item())
        return bool(flag.item())

    host_loss = device.type == "cpu" and not d.enabled
    model.train()
    interval_start = time.perf_counter()
    with TrainProgress(cfg.steps, enabled=cfg.progress and d.is_main, start=st["step"]) as progress:
        for step in range(st["step"], cfg.steps):
            batch = source.next(step, method.uses_unlabeled)
            out = train_step(model, method, optimizer, batch, amp=amp, params=params, d=d, grad_clip=cfg.grad_clip)
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            # Accumulate on the device; synchronise only at evaluation time.
            for k, v in {"loss": out.loss.detach(), **out.logs}.items():
                st["sums"][k] = st["sums"].get(k, 0) + v.float()
            st["correct"] = st["correct"] + (out.logits_l.argmax(-1) == batch.y_l).sum()
            st["seen"] += len(batch.y_l)
            done = step + 1
            # On the CPU the loss is already in host memory: notice divergence at once (on a GPU, at
            # the next checkpoint or evaluation, without a per-step synchronisation).
            if host_loss and not math.isfinite(out.loss.item()):
                raise Diverged(f"loss became non-finite at step {done}; lower optim.lr or the method's weight")
            progress.tick(done)
            if done % cfg.eval_every == 0 or done == cfg.steps:
                evaluate_and_log(done, interval_start)
                interval_start = time.perf_counter()
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                checkpoint(done)
            if stop is not None and done < cfg.steps and stopping(done):
                if done % cfg.checkpoint_every:
                    checkpoint(done)
                if writer is not None:
                    writer.close()
                raise Interrupted(stop.signum or signal.SIGTERM, done, cfg.steps)
    if writer is not None:
        writer.close()

    best, last = st["best"], st["last"]
    return {**base, "status": "completed", "val_acc": best["val_acc"], "test_acc": best["test_acc"],
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
            "n_unlabeled": len(split.unlabeled), "n_val": len(split.val), "n_test": len(y_test),
            "n_params": n_params, "wall_time_s": time.time() - started + st.get("wall_before", 0.0),
            "train_time_s": st["train_time"], "step_time_ms": 1000 * st["train_time"] / cfg.steps,
            "step_time_ms_median": statistics.median(st["step_times"]) if st["step_times"] else None}
