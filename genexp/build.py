"""Building a run's objects from its config with `hydra.utils.instantiate`."""
from __future__ import annotations

import math
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genexp.data.dataset import Dataset
from genexp.data.text import tfidf_encode
from genexp.errors import GenexpError
from genexp.methods.base import Method
from genexp.models.base import GenexpModel
from genexp.models.frozen import FROZEN_KEYS, frozen_features, frozen_head, is_frozen


def _instantiate(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """instantiate() whose failures come back as one line naming the config group."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, GenexpError):
            raise cause from None
        if isinstance(cause, TypeError):
            raise GenexpError(f"{what}: {cause}. Check the keys you set under {what}.") from None
        raise


def without_name(node: DictConfig) -> DictConfig:
    """Group configs carry a display `name`; it is not a constructor argument."""
    d = OmegaConf.to_container(node, resolve=True)
    d.pop("name", None)
    return OmegaConf.create(d)


def build_dataset(cfg: DictConfig) -> Dataset:
    node = without_name(cfg.dataset)
    # `max_features` configures the TF-IDF encoding below, not the loader.
    node.pop("max_features", None)
    data: Dataset = _instantiate(node, "dataset")
    if data.is_text and isinstance(data.x_train, list):
        encoder = cfg.model.get("text_encoder")
        if encoder is None:
            # Vector models read texts as TF-IDF; text models bring their own tokenizer.
            data = tfidf_encode(data, max_features=cfg.dataset.get("max_features", 5000))
        elif is_frozen(cfg.model):
            # A frozen encoder's output is fixed: encode once (cached), then train on vectors.
            data = frozen_features(data, cfg)
        else:
            # Partial first: instantiate(..., data=data) would make OmegaConf convert the Dataset
            # dataclass into a config (it cannot: its fields hold tensors and Union types).
            data = _instantiate(encoder, "model.text_encoder", _partial_=True)(data)
    return data


def build_model(cfg: DictConfig, data: Dataset) -> GenexpModel:
    if is_frozen(cfg.model):
        return frozen_head(cfg.model, data)
    node = without_name(cfg.model)
    node.pop("text_encoder", None)
    for key in FROZEN_KEYS:
        node.pop(key, None)
    factory = _instantiate(node, "model", _partial_=True)
    # Data-dependent constructor arguments a text encoder hands over (e.g. the vocabulary size
    # and token counts of a vocabulary built on the training texts, for model=lstm).
    extra = getattr(data, "model_kwargs", None) or {}
    return factory(input_shape=data.input_shape, num_classes=data.num_classes, **extra)


def build_method(cfg: DictConfig) -> Method:
    method = _instantiate(without_name(cfg.method), "method")
    if not isinstance(method, Method):
        raise GenexpError(f"method._target_ must name a genexp.methods.Method subclass, got {type(method).__name__}")
    return method


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    o = cfg.optim
    for key in ("lr", "weight_decay"):
        if o[key] < 0:
            raise GenexpError(f"optim.{key}={o[key]} must be >= 0: set optim.{key}=<non-negative number>")
    # No weight decay on biases and normalisation parameters (standard for WRN/CNN-13 recipes).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    factory = _instantiate(o.optimizer, "optim.optimizer", _partial_=True)
    extra: dict[str, Any] = {}
    devices = {p.device.type for p in model.parameters()}
    if len(devices) == 1 and devices <= {"cuda", "cpu"} \
            and getattr(factory, "func", None) in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD) \
            and "fused" not in getattr(factory, "keywords", {}) and "foreach" not in getattr(factory, "keywords", {}):
        # One kernel for the whole update instead of ~10 per tensor: on the CPU too, where it cut
        # Adam's step on the digits MLP from 339 to 125 µs (1 thread).
        extra["fused"] = True
    opt = factory(groups, **extra)
    steps, warmup, schedule = int(cfg.steps), int(o.get("warmup_steps", 0)), o.get("schedule", "cosine")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if schedule == "linear":
            return max(0.0, 1 - t)
        if schedule == "step":
            return float(o.get("decay_rate", 0.1)) ** (step // int(o.get("decay_steps", steps)))
        return 1.0

    if schedule not in ("cosine", "linear", "step", "constant"):
        raise GenexpError(f"optim.schedule={schedule!r} is unknown: use cosine, linear, step or constant")
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
