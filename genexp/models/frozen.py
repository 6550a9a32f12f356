"""`model=hf_encoder model.freeze=true`: the encoder runs once over every text, outside
training (`genexp.data.features`, cached on disk), and genexp trains only a head on the pooled
features. The trained model is a plain MLP on vectors, so `embed` is the identity and every
method perturbs the pooled feature; no gradient can reach the encoder, which is not part of it.
"""
from __future__ import annotations

import math

from omegaconf import DictConfig
from torch import Tensor

from genexp.data.dataset import Dataset
from genexp.errors import GenexpError
from genexp.models.hf_encoder import HFEncoder
from genexp.models.mlp import MLP

# Keys only the frozen mode reads; the fine-tuned HFEncoder must not receive them.
FROZEN_KEYS = ("freeze", "pooling", "normalize", "standardize", "head_widths", "head_activation", "head_dropout",
               "head_batchnorm", "encode_batch_size", "cache_dir")


def is_frozen(model_cfg: DictConfig) -> bool:
    """`model.freeze`, which only model=hf_encoder may set."""
    if not model_cfg.freeze:
        return False
    if model_cfg._target_ != f"{HFEncoder.__module__}.{HFEncoder.__qualname__}":
        raise GenexpError(f"model.freeze=true works with model=hf_encoder only (a head on its frozen features), got "
                          f"model={model_cfg.name}: drop model.freeze=true or use model=hf_encoder")
    return True


def frozen_features(data: Dataset, cfg: DictConfig, threads: int | None = None) -> Dataset:
    """The dataset's texts replaced by cached pooled features, from the run config's model keys;
    `threads` as genexp.data.features.hf_features takes it."""
    from genexp.data.features import hf_features

    m = cfg.model
    data = hf_features(data, name_or_path=m.name_or_path, max_length=m.text_encoder.max_length,
                       pooling=m.pooling, normalize=m.normalize, batch_size=m.encode_batch_size,
                       cache_dir=m.cache_dir, device=cfg.device, progress=bool(cfg.progress), threads=threads)
    if bool(m.standardize):
        data.x_train, data.x_test = standardize(data.x_train, data.x_test)
    return data


def standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension standardisation fitted on the training features (no labels; test never
    enters the statistics), divided by sqrt(D) so that a feature's mean squared norm is 1 and
    perturbation sizes (method.eps) stay on the scale of unit-normalised features.

    Applied after the cache (which keeps the encoder's pooled features), so it needs no key of its
    own. A dimension that is constant on the training set (MiniLM has one) stays 0: its std is
    floored at 1e-6 of the largest."""
    mean = train.mean(0)
    std = train.std(0)
    std = std.clamp_min(1e-6 * float(std.max().clamp_min(1e-30)))
    scale = std * math.sqrt(train.shape[1])

    def apply(x: Tensor) -> Tensor:
        return ((x - mean) / scale).to(x.dtype)

    return apply(train), apply(test)


def frozen_head(model_cfg: DictConfig, data: Dataset) -> MLP:
    """A linear (`head_widths=[]`) or MLP head on the pooled features."""
    if data.frozen_features is None:
        raise GenexpError(f"model.freeze=true needs a text dataset (it trains a head on encoded texts), got "
                          f"dataset={data.name}: use dataset=tweets, imdb or text")
    m = model_cfg
    if not 0 <= float(m.head_dropout) < 1:
        raise GenexpError(f"model.head_dropout={m.head_dropout} must be in [0, 1)")
    return MLP(data.input_shape, data.num_classes, widths=list(m.head_widths), activation=m.head_activation,
               batchnorm=bool(m.head_batchnorm), dropout=float(m.head_dropout))
