"""Every experiment preset composes, resolves and builds each method of its sweep."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import genexp
from genexp.build import build_method

PRESETS = sorted(p.stem for p in (Path(genexp.__file__).parent / "configs" / "experiment").glob("*.yaml"))


def compose_train(overrides, hydra=False):
    GlobalHydra.instance().clear()
    with initialize_config_module("genexp.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=hydra)
    if not hydra:
        OmegaConf.resolve(cfg)
    return cfg


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_builds_every_swept_method(preset):
    cfg = compose_train([f"experiment={preset}"], hydra=True)
    params = cfg.hydra.sweeper.params
    methods = str(params.method).split(",") if "method" in params else [cfg.method.name]
    for method in methods:
        run = compose_train([f"experiment={preset}", f"method={method}"])
        assert run.experiment_name == preset
        m = build_method(run)
        assert run.method.name == method and m is not None


def test_cifar10_labels_uses_oliver_hyperparameters():
    run = compose_train(["experiment=cifar10_labels", "method=vat"])
    assert (run.optim.lr, run.method.weight, run.steps, run.batch_size) == (3e-3, 0.3, 500000, 100)
    mt = compose_train(["experiment=cifar10_labels", "method=mean_teacher"])
    assert (mt.optim.lr, mt.method.weight) == (4e-4, 8.0)
    assert run.method.eps == 6.0 and compose_train(["experiment=cifar10_labels", "method=vat_entmin"]).method.eps == 6.0
    assert compose_train(["method=vat"]).method.eps == 1.0  # vat_eps is the preset's, not a global default


def test_mnist_labels_uses_miyato_2018_protocol():
    run = compose_train(["experiment=mnist_labels", "method=vat"])
    assert list(run.model.widths) == [1200, 600, 300, 150] and run.model.batchnorm and run.model.hidden_noise == 0.5
    assert (run.batch_size, run.unlabeled_batch_size, run.optim.lr, run.optim.decay_rate, run.optim.decay_steps) == \
        (100, 250, 0.002, 0.9, 500)
    assert run.method.eps == 5.0 and run.dataset.val_size == 1000 and run.unlabeled_includes_labeled
    assert compose_train(["experiment=mnist_labels", "method=vat_entmin"]).method.eps == 5.0
