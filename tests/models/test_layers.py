"""Per-model layer lookups (models/layers.py) and the start-up FLOP count they let a run skip."""
import pytest
import torch
from omegaconf import OmegaConf

from genexp.models.batchnorm import batchnorms
from genexp.models.layers import draws_random, layers_of
from genexp.models.mlp import MLP
from genexp.train.setup import sized_by_flops


@pytest.mark.parametrize("kwargs, random", [({}, False), ({"dropout": 0.3}, True), ({"hidden_noise": 0.5}, True),
                                            ({"dropout": 0.0, "hidden_noise": 0.0}, False)])
def test_draws_random_sees_dropout_and_hidden_noise(kwargs, random):
    assert draws_random(MLP((4,), 3, widths=(8, 8), **kwargs)) is random


def test_a_models_layers_are_looked_up_once_and_per_model():
    a, b = MLP((4,), 3, widths=(8, 8), batchnorm=True), MLP((4,), 3, widths=(8,), batchnorm=True)
    first = batchnorms(a)
    assert len(first) == 2 and all(isinstance(m, torch.nn.BatchNorm1d) for m in first)
    assert batchnorms(a) is first  # cached: the same list, not a second walk
    assert len(batchnorms(b)) == 1  # keyed on the model object
    assert layers_of(a, (torch.nn.Linear,)) == [m for m in a.modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("threads, compile_, device, counted", [
    ("auto", "auto", "cpu", True), (1, "auto", "cpu", True), ("auto", False, "cpu", True),
    (1, False, "cpu", False), (2, True, "cpu", False), ("auto", True, "cuda", False), ("auto", "auto", "cuda", True)])
def test_the_step_is_counted_only_when_an_auto_choice_needs_it(threads, compile_, device, counted):
    cfg = OmegaConf.create({"cpu_threads": threads, "compile": compile_})
    assert sized_by_flops(cfg, torch.device(device)) is counted
