"""Step-based semi-supervised training: one labelled and one unlabelled batch per step."""
from __future__ import annotations

import copy
import logging
import math
import random
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

from genexp.build import build_dataset, build_method, build_model, build_optimizer
from genexp.data.split import make_split
from genexp.errors import GenexpError
from genexp.methods.base import Batch
from genexp.progress import TrainProgress
from genexp.records import append_jsonl, atomic_write_json, git_commit, versions
from genexp.sampling import IndexStream

log = logging.getLogger("genexp")


class Diverged(RuntimeError):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenexpError(f"device={name} but no CUDA device is visible: set device=cpu or device=auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: Tensor, y: Tensor, mask: Tensor | None, amp: Any,
             preprocess: Any = None, batch_size: int = 1024) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode."""
    was_training = model.training
    model.eval()
    correct, loss = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for i in range(0, len(y), batch_size):
        xb = x[i:i + batch_size]
        with amp():
            logits = model(xb if preprocess is None else preprocess(xb), None if mask is None else mask[i:i + batch_size])
        yb = y[i:i + batch_size]
        correct += (logits.argmax(-1) == yb).sum()
        loss += F.cross_entropy(logits.float(), yb, reduction="sum")
    model.train(was_training)
    n = max(len(y), 1)
    return correct.item() / n, loss.item() / n


def validate_config(cfg: DictConfig) -> None:
    for key in ("steps", "batch_size", "unlabeled_batch_size", "eval_every"):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise GenexpError(f"{key}={value} must be a positive integer: set {key}=<int > 0>")
    if cfg.ema_decay is not None and not 0 <= cfg.ema_decay < 1:
        raise GenexpError(f"ema_decay={cfg.ema_decay} must be in [0, 1): set ema_decay=0 (off) or e.g. 0.999")


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train one run into `run_dir` and return its result record (also written as result.json)."""
    validate_config(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    started = time.time()
    base = {"status": "running", "dataset": cfg.dataset.name, "model": cfg.model.name, "method": cfg.method.name,
            "labels": cfg.labels, "seed": cfg.seed, "split_seed": cfg.split_seed, "steps": cfg.steps,
            "experiment": cfg.get("experiment_name"), "device": str(device), "git_commit": git_commit(),
            "versions": versions(), "run_dir": str(run_dir)}
    atomic_write_json(run_dir / "result.json", base)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    try:
        result = _train(cfg, run_dir, device, base)
    except (GenexpError, KeyboardInterrupt):
        atomic_write_json(run_dir / "result.json", {**base, "status": "failed", "reason": "interrupted or bad input",
                                                    "wall_time_s": time.time() - started})
        raise
    except Exception as e:  # a failed run is a recorded result, not a lost one
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        atomic_write_json(run_dir / "result.json", {**base, "status": "failed", "reason": reason,
                                                    "wall_time_s": time.time() - started})
        raise
    atomic_write_json(run_dir / "result.json", result)
    return result


def _train(cfg: DictConfig, run_dir: Path, device: torch.device, base: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    data = build_dataset(cfg)
    split = make_split(data.y_train.numpy(), cfg.labels, num_classes=data.num_classes, split_seed=cfg.split_seed,
                       val_size=data.val_size, strategy=cfg.labeled_strategy,
                       unlabeled_includes_labeled=cfg.unlabeled_includes_labeled)
    split.save(run_dir / "split.json")
    x, y = data.x_train.to(device), data.y_train.to(device)
    mask = None if data.mask_train is None else data.mask_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    mask_test = None if data.mask_test is None else data.mask_test.to(device)
    val_idx = torch.as_tensor(split.val, device=device)
    x_val, y_val = x[val_idx], y[val_idx]
    mask_val = None if mask is None else mask[val_idx]

    model = build_model(cfg, data).to(device)
    method = build_method(cfg)
    if method.text_only and mask is None:
        raise GenexpError(f"method={cfg.method.name} works on text models only: use a text dataset and model")
    method.setup(model, num_classes=data.num_classes, num_train=len(y), device=device)
    optimizer, scheduler = build_optimizer(cfg, model)
    ema = None
    if cfg.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    default_eval_model = ema.module if ema is not None else model
    use_amp = device.type == "cuda" and cfg.amp in ("auto", "bf16", True)
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext

    lab = IndexStream(torch.as_tensor(split.labeled), cfg.batch_size, seed=cfg.seed * 1000 + 1)
    unl = IndexStream(torch.as_tensor(split.unlabeled), cfg.unlabeled_batch_size, seed=cfg.seed * 1000 + 2)
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + 3)
    augment, pre = data.augment, data.preprocess or (lambda t: t)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s | %s | %s | labels=%d unlabelled=%d val=%d test=%d | %d params | %s", cfg.dataset.name,
             cfg.model.name, cfg.method.name, len(split.labeled), len(split.unlabeled), len(split.val),
             len(y_test), n_params, device)

    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(log_dir=str(run_dir / "tb"))
    metrics_path = run_dir / "metrics.jsonl"
    best: dict[str, Any] = {"val_acc": -1.0}
    best_state = None
    sums: dict[str, Tensor] = {}
    correct = torch.zeros((), device=device)
    seen = 0
    train_time, timed_steps, interval_start = 0.0, 0, time.perf_counter()
    step_times: list[float] = []
    last: dict[str, Any] = {}

    model.train()
    with TrainProgress(cfg.steps, enabled=cfg.progress) as progress:
        for step in range(cfg.steps):
            il, iu = lab.next().to(device), None
            batch = Batch(x_l=pre(x[il]), y_l=y[il], mask_l=None if mask is None else mask[il], idx_l=il,
                          step=step, generator=gen)
            if method.uses_unlabeled:
                iu = unl.next().to(device)
                batch.x_u, batch.mask_u, batch.idx_u = pre(x[iu]), None if mask is None else mask[iu], iu
            if augment is not None:
                batch.x_l = augment(batch.x_l, gen)
                if batch.x_u is not None:
                    batch.x_u = augment(batch.x_u, gen)
            with amp():
                out = method.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            method.after_step(model, batch)
            # Accumulate on the device; synchronise only at evaluation time.
            for k, v in {"loss": out.loss.detach(), **out.logs}.items():
                sums[k] = sums.get(k, 0) + v.float()
            correct += (out.logits_l.argmax(-1) == batch.y_l).sum()
            seen += len(batch.y_l)
            done = step + 1
            if done % cfg.eval_every and done != cfg.steps:
                continue
            n_int = done - timed_steps
            train_loss = {k: (v / n_int).item() for k, v in sums.items()}
            train_acc = correct.item() / max(seen, 1)
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - interval_start
            train_time += elapsed
            step_times.append(1000 * elapsed / n_int)
            timed_steps = done
            if not all(math.isfinite(v) for v in train_loss.values()):
                raise Diverged(f"loss became non-finite at step {done} ({train_loss}); lower optim.lr or the "
                               f"method's weight")
            eval_model = method.eval_model(model) or default_eval_model
            val_acc, val_loss = evaluate(eval_model, x_val, y_val, mask_val, amp, data.preprocess)
            test_acc, test_loss = evaluate(eval_model, x_test, y_test, mask_test, amp, data.preprocess)
            last = {"step": done, "lr": scheduler.get_last_lr()[0], "train_acc": train_acc,
                    **{f"train_{k}": v for k, v in train_loss.items()}, "val_acc": val_acc, "val_loss": val_loss,
                    "test_acc": test_acc, "test_loss": test_loss, "elapsed_s": time.time() - started}
            append_jsonl(metrics_path, last)
            for k, v in last.items():
                if k != "step":
                    writer.add_scalar(k, v, done)
            if val_acc > best["val_acc"]:
                best = {"val_acc": val_acc, "test_acc": test_acc, "step": done}
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in eval_model.state_dict().items()}
            progress.update(done, loss=train_loss["loss"], train_acc=train_acc, val_acc=val_acc, test_acc=test_acc)
            sums, correct, seen = {}, torch.zeros((), device=device), 0
            interval_start = time.perf_counter()
    writer.close()

    torch.save({"model": model.state_dict(), "eval_model": eval_model.state_dict(), "best_model": best_state,
                "step": cfg.steps, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "method": method.state_dict(),
                "config": OmegaConf.to_container(cfg, resolve=True)}, run_dir / "checkpoint.pt.tmp")
    (run_dir / "checkpoint.pt.tmp").replace(run_dir / "checkpoint.pt")
    result = {**base, "status": "completed", "val_acc": best["val_acc"], "test_acc": best["test_acc"],
              "best_step": best["step"], "val_acc_final": last["val_acc"], "test_acc_final": last["test_acc"],
              "train_acc_final": last["train_acc"], "n_labeled": len(split.labeled),
              "n_unlabeled": len(split.unlabeled), "n_val": len(split.val), "n_test": len(y_test),
              "n_params": n_params, "wall_time_s": time.time() - started,
              "train_time_s": train_time, "step_time_ms": 1000 * train_time / cfg.steps,
              "step_time_ms_median": statistics.median(step_times)}
    log.info("done: val_acc %.4f test_acc %.4f (best step %d) | final test_acc %.4f | %.1f ms/step | %.1fs",
             result["val_acc"], result["test_acc"], result["best_step"], result["test_acc_final"],
             result["step_time_ms"], result["wall_time_s"])
    return result
