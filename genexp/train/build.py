"""Building a run's objects from its config with `genexp.instantiate` (Hydra's semantics, without Hydra)."""
from __future__ import annotations

import copy
import inspect
import math
import sys
from typing import Any, Iterable, Iterator

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from genexp.data.dataset import Dataset
from genexp.data.text import tfidf_encode
from genexp.data.user_function import function_dataset, genexp_keys
from genexp.errors import GenexpError
from genexp.instantiate import InstantiationException, instantiate
from genexp.locate import locate
from genexp.methods.base import Method
from genexp.models.base import GenexpModel
from genexp.models.frozen import FROZEN_KEYS, frozen_features, frozen_head, is_frozen
from genexp.models.plain import as_genexp_model, constructor_kwargs
from genexp.runs.config_keys import ADDED_KEYS
from genexp.train.interrupt import stop_at_once
from genexp.train.threads import usable_cores


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


# What a config read off disk (a run dir's config.yaml) may instantiate. A run dir is data: people
# share them and download them, and `_target_` can name any importable callable (torch.load,
# pandas.read_pickle, ...), so only what genexp ships is allowed, plus what the user names now.
TEXT_ENCODERS = {"hf_tokenize", "vocab_encode", "tokenize_encode"}
LIBRARIES = {"genexp", "torch", "torchvision", "numpy", "pandas", "scipy", "sklearn", "joblib", "dill", "cloudpickle",
             "hydra", "omegaconf", "transformers", "datasets", "huggingface_hub", "safetensors", "yaml", "filelock"}


# Keys of a `_target_` node that Hydra reads itself, and keys of a group's node that the build reads
# and removes before instantiating the rest (see build_dataset, build_model, build_method).
HYDRA_KEYS = frozenset({"_target_", "_args_", "_partial_", "_recursive_", "_convert_"})
BUILD_KEYS = {"dataset": ("name", "max_features"), "model": ("name", "text_encoder", *FROZEN_KEYS), "method": ("name",)}


def config_targets(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, value) of every `_target_` in a resolved config, nested nodes and lists included."""
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}.{k}" if path else str(k)
            if k == "_target_":
                yield here, v
            else:
                yield from config_targets(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from config_targets(v, f"{path}[{i}]")


def target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """(key path, mapping) of every mapping with a `_target_` in a resolved config, nested ones included."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
        for k, v in node.items():
            yield from target_nodes(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from target_nodes(v, f"{path}[{i}]")


def keyword_refusal(obj: Any, node: dict, path: str) -> str | None:
    """Why the keys of `node` may not be passed to `obj`, or None if they may: each must be a
    parameter `obj` names. A `**kwargs` catch-all admits nothing more: behind one, a loader passes
    keys on to a library (from_pretrained's trust_remote_code) that a run dir must not reach."""
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return "has no signature to check the config's keys against"
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [k for k in node if k not in HYDRA_KEYS and k not in named and k not in BUILD_KEYS.get(path, ())]
    if unknown:
        return f"sets {unknown[0]!r}, which it does not declare"
    args = node.get("_args_", [])
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not isinstance(args, list) or (len(args) > len(positional) and not any(p.kind == p.VAR_POSITIONAL for p in params)):
        return "passes more positional arguments (_args_) than it declares"
    return None


def _genexp_callable(obj: Any) -> bool:
    """genexp's methods and models (classes), its dataset loaders and text encoders (functions):
    not any genexp function, as some read pickles or write files given a path."""
    module = getattr(obj, "__module__", None) or ""
    if inspect.isclass(obj):
        return (module.startswith("genexp.methods.") and issubclass(obj, Method)) or \
            (module.startswith("genexp.models.") and issubclass(obj, torch.nn.Module))
    name = getattr(obj, "__name__", "")
    return inspect.isfunction(obj) and module.startswith("genexp.data.") and \
        (name.startswith("load_") or name in TEXT_ENCODERS)


def _torch_optim_class(obj: Any) -> bool:
    schedulers = getattr(torch.optim.lr_scheduler, "LRScheduler", torch.optim.lr_scheduler._LRScheduler)
    return inspect.isclass(obj) and (getattr(obj, "__module__", None) or "").startswith("torch.optim") \
        and issubclass(obj, (torch.optim.Optimizer, schedulers))


def _in_module(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def target_refusal(target: Any, allow_modules: Iterable[str] = (), chosen: Iterable[str] = ()) -> str | None:
    """Why `target` may not be instantiated from a config read off disk, or None if it may.

    Allowed: genexp's own methods, models, dataset loaders and text encoders; torch.optim's
    optimisers and schedulers; anything in a module of `allow_modules` (allow_targets=[mypkg]);
    a target in `chosen` (named by the current command's own config). The name is checked before
    anything is imported (importing a module runs it), then what it names: `genexp.x.torch.load`
    starts like genexp's but is torch.load.
    """
    if not isinstance(target, str) or not target:
        return "is not a dotted name"
    if target in set(chosen):
        return None
    allow = [m for m in allow_modules if m]
    if target.startswith(("genexp.data.", "genexp.models.", "genexp.methods.")):
        check = _genexp_callable
    elif target.startswith("torch.optim."):
        check = _torch_optim_class
    elif any(_in_module(target, m) for m in allow):
        def check(obj: Any) -> bool:
            return any(_in_module(getattr(obj, "__module__", None) or "", m) for m in allow)
    else:
        return "is not genexp's nor a torch.optim optimiser or scheduler"
    try:
        obj = locate(target)
    except Exception:
        return "does not import"
    return None if check(obj) else "is not a genexp method, model, dataset loader or torch.optim optimiser/scheduler"


def check_targets(cfg: Any, source: str, allow_modules: Iterable[str] = (), chosen: Iterable[str] = ()) -> None:
    """Refuse (one line, before anything is instantiated) a config read from `source` that names a
    `_target_` the user did not choose (see `target_refusal`), or passes one of genexp's or
    torch.optim's targets a key it does not declare (see `keyword_refusal`). The arguments of the
    user's own code (allow_targets, or named by the command's config) are left to that code."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    allow, chosen = list(allow_modules), set(chosen)
    for key, target in config_targets(container):
        why = target_refusal(target, allow, chosen)
        if why is not None:
            top = target.split(".")[0] if isinstance(target, str) else ""
            # Never advise allowing a library's or Python's own callables: that is the attack.
            fix = f"if {top} is your own code and you trust this config, add allow_targets=[{top}]" \
                if top and top not in LIBRARIES and top not in sys.stdlib_module_names else \
                "a run dir may name only genexp's and torch.optim's classes: do not resume it"
            raise GenexpError(f"{source}: {key}={target!r} {why}, so it is not run: {fix} (nothing was changed)")
    for path, node in target_nodes(container):
        target = node["_target_"]
        if not target.startswith(("genexp.", "torch.optim.")):
            continue
        try:
            obj = locate(target)
        except Exception:  # a target the command's own config names, as this run dir does, that does not import
            raise GenexpError(f"{source}: {path}._target_={target!r} does not import: fix the config or reinstall "
                              f"genexp (nothing was changed)") from None
        why = keyword_refusal(obj, node, path)
        if why is not None:
            raise GenexpError(f"{source}: {path or '<root>'} ({target}) {why}, so it is not run: a run dir may pass "
                              f"a target only the arguments it names; do not resume it (nothing was changed)")


def declared(cfg: DictConfig) -> DictConfig:
    """`cfg` in struct mode (set in place), as Hydra composes it: reading a key that no yaml declares
    raises omegaconf's ConfigAttributeError instead of answering None, so the build reads keys
    directly, never through get() defaults. A run dir's config.yaml (read by OmegaConf.load: not in
    struct mode) that predates ADDED_KEYS (genexp.runs.config_keys: the keys declared since, at the
    value the code took when they were absent) comes back as a copy with them added, so that it resumes
    as it ran: the run's own config, which names it (checkpoint.run_id) and is recorded, stays as it
    was. Every other key the build reads must be in the config."""
    OmegaConf.set_struct(cfg, True)
    missing = [(group, leaf) for group, _, leaf in (key.rpartition(".") for key in ADDED_KEYS)
               if isinstance(OmegaConf.select(cfg, group), DictConfig) and leaf not in cfg[group]]
    if not missing:
        return cfg
    cfg = copy.deepcopy(cfg)
    for group, leaf in missing:
        with open_dict(cfg[group]):
            cfg[group][leaf] = ADDED_KEYS[f"{group}.{leaf}"]
    return cfg


def without_name(node: DictConfig) -> DictConfig:
    """Group configs carry a display `name`; it is not a constructor argument."""
    d = OmegaConf.to_container(node, resolve=True)
    d.pop("name", None)
    return OmegaConf.create(d)


def build_dataset(cfg: DictConfig) -> Dataset:
    cfg = declared(cfg)
    node = without_name(cfg.dataset)
    # `max_features` configures the TF-IDF encoding below, not the loader.
    for key in BUILD_KEYS["dataset"]:
        node.pop(key, None)
    own = genexp_keys(node)
    data: Dataset = _instantiate(node, "dataset")
    if not isinstance(data, Dataset):
        # Your own function's arrays (genexp.data.user_function has the contract).
        data = function_dataset(data, f"dataset._target_={node._target_}", cfg.dataset.name, **own)
    else:
        for key, value in own.items():  # a function of yours that returns a genexp Dataset itself
            setattr(data, key, value)
    if data.is_text and isinstance(data.x_train, list):
        encoder = cfg.model.text_encoder
        if encoder is None:
            # Vector models read texts as TF-IDF; text models bring their own tokenizer.
            data = tfidf_encode(data, max_features=cfg.dataset.max_features)
        elif is_frozen(cfg.model):
            data = encode_frozen(data, cfg)
        else:
            # Partial first: instantiate(..., data=data) would make OmegaConf convert the Dataset
            # dataclass into a config (it cannot: its fields hold tensors and Union types).
            data = _instantiate(encoder, "model.text_encoder", _partial_=True)(data)
    return data


def encode_frozen(data: Dataset, cfg: DictConfig) -> Dataset:
    """A frozen encoder's output is fixed: encode once (cached, with every usable core), then train
    on vectors. Minutes of loading and encoding (or of waiting for another process's) come before
    training: a signal stops them at once; the cache gets a whole entry or none."""
    with stop_at_once(cfg.steps):
        return frozen_features(data, cfg, threads=usable_cores())


def build_model(cfg: DictConfig, data: Dataset) -> GenexpModel:
    cfg = declared(cfg)
    if is_frozen(cfg.model):
        return frozen_head(cfg.model, data)
    node = without_name(cfg.model)
    for key in BUILD_KEYS["model"]:
        node.pop(key, None)
    factory = _instantiate(node, "model", _partial_=True)
    # Data-dependent constructor arguments a text encoder hands over (e.g. the vocabulary size
    # and token counts of a vocabulary built on the training texts, for model=lstm).
    offered = {"input_shape": data.input_shape, "num_classes": data.num_classes, **data.model_kwargs}
    where = f"model={cfg.model.name} ({node._target_})"
    model = factory(**constructor_kwargs(factory, offered, where))
    return as_genexp_model(model, where, tokens=data.mask_train is not None)


def build_method(cfg: DictConfig) -> Method:
    method = _instantiate(without_name(cfg.method), "method")
    if not isinstance(method, Method):
        raise GenexpError(f"method._target_ must name a genexp.methods.Method subclass, got {type(method).__name__}")
    return method


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    cfg = declared(cfg)
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
    steps, warmup, schedule = int(cfg.steps), int(o.warmup_steps), o.schedule
    decay_rate, decay_steps = float(o.decay_rate), steps if o.decay_steps is None else int(o.decay_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if schedule == "linear":
            return max(0.0, 1 - t)
        if schedule == "step":
            return decay_rate ** (step // decay_steps)
        return 1.0

    if schedule not in ("cosine", "linear", "step", "constant"):
        raise GenexpError(f"optim.schedule={schedule!r} is unknown: use cosine, linear, step or constant")
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
