"""What a run is set up from, for `genexp train` and `genexp bench` alike: the checked config,
the device, the data and its split, the placed model, and the batches it is trained on.

`genexp bench` calls the same `setup_run` as the trainer, so that what it times is what
`genexp train` runs.
"""
from __future__ import annotations

import logging
import math
import random
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from genexp.data.split import PER_SEED, Split, check_saved_split, drawn_split_seed, make_split
from genexp.errors import GenexpError
from genexp.locate import locate
from genexp.train import distributed
from genexp.train.batches import BatchSource
from genexp.train.build import build_dataset, build_model, declared
from genexp.train.distributed import Dist
from genexp.train.threads import ThreadChoice, apply_threads, choose_threads, forward_flops

log = logging.getLogger("genexp")
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
    for key in ("seed", "split_seed", "bn_recalibrate"):
        value = cfg.get(key, 0)  # a run recorded before bn_recalibrate existed has no such key
        if key == "split_seed" and value == PER_SEED:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            also = " or split_seed=per_seed (each seed its own labelled set)" if key == "split_seed" else ""
            raise GenexpError(f"{key}={value!r} must be a non-negative integer: set e.g. {key}=0{also}")
    for key in ("eval_ema", "grad_clip"):
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
    amp = cfg.get("amp", "auto")
    if not (isinstance(amp, bool) or amp in ("auto", "bf16")):  # not `in (True, ...)`: 1 == True
        raise GenexpError(f"amp={amp!r} is not an autocast mode: use amp=auto (GPU only), amp=bf16 (GPU and CPU) "
                          f"or amp=false")
    labels = cfg.labels
    if not (labels == "all" or (isinstance(labels, int) and not isinstance(labels, bool))):
        raise GenexpError(f"labels={labels!r} must be an integer or 'all': set e.g. labels=100")
    ema = cfg.get("eval_ema")
    if ema is not None and not 0 <= ema < 1:
        raise GenexpError(f"eval_ema={ema} must be in [0, 1): set eval_ema=0 (off) or e.g. 0.999")
    threads = cfg.get("cpu_threads", "auto")
    if threads not in (None, "auto") and not (_is_int(threads) and threads > 0):
        raise GenexpError(f"cpu_threads={threads!r} must be a positive integer or auto: set e.g. cpu_threads=1")
    val_size = cfg.dataset.get("val_size") if isinstance(cfg.get("dataset"), DictConfig) else None
    if val_size is not None and not (_is_number(val_size) and math.isfinite(val_size) and val_size >= 0
                                     and (val_size < 1 or float(val_size).is_integer())):
        raise GenexpError(f"dataset.val_size={val_size!r} must be a fraction in [0, 1) or a count (an integer >= 0): "
                          f"set e.g. dataset.val_size=0.1")
    widths = cfg.model.get("widths") if isinstance(cfg.get("model"), DictConfig) else None
    if widths is not None and not (OmegaConf.is_list(widths) and all(_is_int(w) and w > 0 for w in widths)):
        raise GenexpError(f"model.widths={_plain_list(widths)} must list positive integers (units per hidden layer): "
                          f"set e.g. model.widths=[256,256]")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _plain_list(v: Any) -> Any:
    return OmegaConf.to_container(v) if OmegaConf.is_list(v) else v


def check_val_size(val_size: float | int, n_labelled: int) -> None:
    """The validation set must leave labelled examples to train on: blame dataset.val_size, not labels."""
    n_val = int(round(val_size * n_labelled)) if isinstance(val_size, float) and val_size < 1 else int(val_size)
    if n_val >= n_labelled:
        raise GenexpError(f"dataset.val_size={val_size} holds out {n_val} of the {n_labelled} labelled training "
                          f"examples, leaving none to train on: set dataset.val_size<{n_labelled} or a fraction "
                          f"such as 0.1")


def resolve_device(name: str, d: Dist | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenexpError(f"device={name} but no CUDA device is visible: set device=cpu or device=auto")
    if d is not None and d.enabled and name.startswith("cuda"):
        return distributed.local_device()
    return torch.device(name)


def set_cpu_threads(cfg: DictConfig, device: torch.device, step_flops: float | None = None) -> ThreadChoice:
    """Apply `cpu_threads` (train/threads.py: auto splits the cores between jobs side by side and
    gives small steps one thread, once `step_flops` is known)."""
    return apply_threads(choose_threads(cfg.get("cpu_threads"), device, step_flops))


def step_flops(cfg: DictConfig, model: torch.nn.Module, train: "Subset", preprocess: Any) -> float | None:
    """Forward FLOPs of one training step's rows (labelled, plus unlabelled when the method uses
    them): what `cpu_threads=auto` and `compile=auto` size their choice by. None where it cannot be counted."""
    if not len(train.x):
        return None
    uses_unlabeled = getattr(locate(cfg.method._target_), "uses_unlabeled", False)
    rows = cfg.batch_size + (cfg.unlabeled_batch_size if uses_unlabeled else 0)
    x = train.x[:2] if preprocess is None else preprocess(train.x[:2])
    try:
        return forward_flops(model, x, None if train.mask is None else train.mask[:2]) * rows
    except Exception as e:  # a model FlopCounterMode cannot trace: the cores' share, no size rule
        log.debug("counting FLOPs failed (%s): cpu_threads=auto ignores the step's size", e)
        return None


def sized_by_flops(cfg: DictConfig, device: torch.device) -> bool:
    """Whether a choice left to `auto` depends on the step's FLOPs (counting them costs a traced
    forward at start-up): threads on a CPU, or whether to compile."""
    return (device.type == "cpu" and cfg.get("cpu_threads", "auto") in (None, "auto")) or cfg.get("compile", "auto") == "auto"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare(cfg: DictConfig, d: Dist | None = None, *, checked: bool = False) -> torch.device:
    """Check the config (unless the caller has: `checked`), pick the device, limit CPU threads (the
    dataset's preprocessing, ZCA included, runs under the limit too) and seed every RNG: what comes
    before anything is built. From here on `cfg` is in struct mode (`build.declared`): reading an
    undeclared key fails."""
    full = declared(cfg)  # a run dir recorded by an earlier version: with the keys added since
    if not checked:
        validate_config(full)
    device = resolve_device(cfg.device, d)
    set_cpu_threads(cfg, device)
    seed_everything(cfg.seed)
    return device


def place_model(model: torch.nn.Module, device: torch.device, input_shape: tuple[int, ...]) -> tuple[Any, bool]:
    """Move to the device; image models on GPU go channels_last with cuDNN autotuning."""
    model = model.to(device)
    channels_last = device.type == "cuda" and len(input_shape) == 3
    if channels_last:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    return model, channels_last


def autocast_for(device: torch.device, amp: Any) -> Any:
    """bf16 autocast on GPU when amp is auto/bf16/true; on CPU only when asked for (bf16/true).

    `auto` leaves the CPU in float32: bf16 can only pay on CPUs with native bf16 matmuls
    (AVX512-BF16, AMX; a bare matmul ran 2x faster on genexp's Zen 4 test machine), and a VAT step
    gains less, as its power iteration stays float32 (`regularizers._common.full_precision`).
    """
    if device.type == "cuda" and amp in ("auto", "bf16", True):
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and amp in ("bf16", True):
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext


@dataclass
class Subset:
    """Examples on the device: inputs, labels and text masks (None for non-text data)."""
    x: Tensor
    y: Tensor
    mask: Tensor | None

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class RunSetup:
    """A run's data, split, placed model and batch source, built the same for train and bench."""
    data: Any
    split: Split
    train: Subset
    val: Subset
    test: Subset
    model: Any
    n_params: int
    channels_last: bool
    amp: Any
    source: BatchSource
    threads: ThreadChoice | None = None  # what cpu_threads resolved to, and why
    step_flops: float | None = None  # forward FLOPs of a training step's rows


def setup_run(cfg: DictConfig, device: torch.device, d: Dist | None = None, split_file: Path | None = None
              ) -> RunSetup:
    """Build the dataset, its split (drawn from the config; a resumed run's saved `split_file` must
    be that very split, or it is refused), the model placed on `device`, and the batch source. The
    global RNGs are those `prepare` seeded: the model's initial weights depend on nothing else."""
    d = d or Dist()
    data = build_dataset(cfg)
    check_val_size(data.val_size, int((data.y_train >= 0).sum()))
    split = make_split(data.y_train.numpy(), cfg.labels, num_classes=data.num_classes,
                       split_seed=drawn_split_seed(cfg.split_seed, cfg.seed), val_size=data.val_size,
                       strategy=cfg.labeled_strategy,
                       unlabeled_includes_labeled=cfg.unlabeled_includes_labeled)
    if split_file is not None and (split_file.exists() or split_file.is_symlink()):
        check_saved_split(split_file, split, len(data.y_train))
    for key in ("batch_size", "unlabeled_batch_size"):
        if cfg[key] % d.world:
            raise GenexpError(f"{key}={cfg[key]} is not divisible by the {d.world} processes: use a multiple")
    train = Subset(data.x_train.to(device), data.y_train.to(device),
                   None if data.mask_train is None else data.mask_train.to(device))
    test = Subset(data.x_test.to(device), data.y_test.to(device),
                  None if data.mask_test is None else data.mask_test.to(device))
    val_idx = torch.as_tensor(split.val, device=device, dtype=torch.long)
    val = Subset(train.x[val_idx], train.y[val_idx], None if train.mask is None else train.mask[val_idx])

    model, channels_last = place_model(build_model(cfg, data), device, data.input_shape)
    n_params = sum(p.numel() for p in model.parameters())
    flops = step_flops(cfg, model, train, data.preprocess) if sized_by_flops(cfg, device) else None
    threads = set_cpu_threads(cfg, device, flops)
    if d.enabled and device.type == "cuda" and cfg.get("sync_bn", True):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + 3 + d.rank)
    source = BatchSource(train.x, train.y, train.mask, torch.as_tensor(split.labeled),
                         torch.as_tensor(split.unlabeled), batch_size=cfg.batch_size,
                         unlabeled_batch_size=cfg.unlabeled_batch_size, seed=cfg.seed, generator=gen,
                         preprocess=data.preprocess, augment=data.augment, d=d, channels_last=channels_last,
                         views=data.views)
    return RunSetup(data=data, split=split, train=train, val=val, test=test, model=model, n_params=n_params,
                    channels_last=channels_last, amp=autocast_for(device, cfg.amp), source=source,
                    threads=threads, step_flops=flops)
