"""One training session of a run (new or resumed): what `genexp.train.loop` builds before its first
step (the run's setup, then method, optimizer and evaluation EMA), what its loop carries from step
to step (Loop, restored by `resume` from a checkpoint) and the records it opens."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from genexp.errors import GenexpError
from genexp.methods.base import Batch, Method
from genexp.runs.files import atomic_write_text
from genexp.train.build import build_method, build_optimizer
from genexp.train.checkpoint import check_belongs, load_checkpoint, set_rng_state
from genexp.train.compiled import LossFn, step_loss
from genexp.train.distributed import Dist
from genexp.train.setup import RunSetup, setup_run
from genexp.train.trackers import Trackers, open_trackers

log = logging.getLogger("genexp")


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
    show_test: bool = True  # False in a search's trial: its printed lines show validation accuracy alone

    @property
    def model(self) -> Any:
        return self.run.model

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"


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
    # The evaluation at `step` that a signal stopped (its interval's closed training terms), or None.
    pending: dict | None = None

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


def log_setup(s: Session) -> None:
    cfg, split = s.cfg, s.run.split
    log.info("%s | %s | %s | labels=%d unlabelled=%d val=%d test=%d | %d params | %s%s", cfg.dataset.name,
             cfg.model.name, cfg.method.name, len(split.labeled), len(split.unlabeled), len(split.val),
             len(s.run.test), s.run.n_params, s.device, f" x{s.d.world}" if s.d.enabled else "")
    if s.device.type == "cpu" and s.run.threads is not None:
        log.info("cpu_threads=%d (%s)", s.run.threads.threads, s.run.threads.reason)
    log.info("compiled step: %s", s.compiled)
