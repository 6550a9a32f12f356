"""Every experiment preset composes, resolves and builds each method of its sweep."""
from pathlib import Path

import pytest
import torch
from helpers import train_cfg
from omegaconf import OmegaConf

import genexp
from genexp.data.dataset import Dataset
from genexp.train.build import build_method, build_model, build_optimizer, declared
from genexp.train.setup import validate_config

CONFIGS = Path(genexp.__file__).parent / "configs"
PRESETS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONFIGS / "method").glob("*.yaml"))


def compose_train(overrides, hydra=False):
    cfg = train_cfg(*overrides, hydra_config=hydra)
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
        assert run.method.name == method and f"{type(m).__module__}.{type(m).__name__}" == run.method._target_


IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # as the loaders give them


def _stand_in(cfg) -> Dataset:
    """Random data of the form the preset's model receives (what build_model reads of a dataset)."""
    y = torch.tensor([0, 1, 0, 1])
    if cfg.model.freeze:
        x = torch.randn(4, 384)
        return Dataset(name="stand-in", x_train=x, y_train=y, x_test=x, y_test=y, num_classes=2,
                       frozen_features={"encoder": "stand-in"})
    if cfg.dataset.name in IMAGE_SHAPES:
        x = torch.rand(4, *IMAGE_SHAPES[cfg.dataset.name])
        return Dataset(name="stand-in", x_train=x, y_train=y, x_test=x, y_test=y, num_classes=10)
    ids = torch.ones(4, 6, dtype=torch.long)
    return Dataset(name="stand-in", x_train=ids, y_train=y, x_test=ids, y_test=y, num_classes=2,
                   mask_train=torch.ones_like(ids), mask_test=torch.ones_like(ids))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_builds_in_struct_mode(preset):
    """Composed as `genexp train` composes it, each preset is in struct mode and stays so through
    its checks and the build of its model and optimizer: none of them reads an undeclared key."""
    cfg = compose_train([f"experiment={preset}"])
    assert OmegaConf.is_struct(cfg)
    assert declared(cfg) is cfg  # a composed preset declares every key: nothing is added
    validate_config(cfg)
    model = build_model(cfg, _stand_in(cfg))
    build_optimizer(cfg, model)
    assert OmegaConf.is_struct(cfg)


def test_cifar10_labels_uses_oliver_hyperparameters():
    run = compose_train(["experiment=cifar10_labels", "method=vat"])
    assert (run.optim.lr, run.method.weight, run.steps, run.batch_size) == (3e-3, 0.3, 500000, 100)
    mt = compose_train(["experiment=cifar10_labels", "method=mean_teacher"])
    assert (mt.optim.lr, mt.method.weight, mt.method.rampup_steps) == (4e-4, 8.0, 200000)
    assert run.method.eps == 6.0 and compose_train(["experiment=cifar10_labels", "method=vat_entmin"]).method.eps == 6.0
    assert compose_train(["method=vat"]).method.eps == 1.0  # 6.0 is the preset's, not a global default


def test_mnist_labels_uses_the_vat_mnist_protocol():
    run = compose_train(["experiment=mnist_labels", "method=vat"])
    assert list(run.model.widths) == [1200, 1200] and run.model.batchnorm and run.model.hidden_noise == 0
    assert not run.model.output_batchnorm and run.model.weight_init == "normal_fan_in" and run.bn_recalibrate >= 59000
    assert (run.batch_size, run.unlabeled_batch_size, run.optim.lr, run.optim.decay_rate, run.optim.decay_steps) == \
        (100, 250, 0.002, 0.9, 240)
    assert (run.method.eps, run.method.xi) == (1.5, 10.0)
    assert run.dataset.val_size == 1000 and run.unlabeled_includes_labeled and run.labeled_strategy == "balanced"
    entmin = compose_train(["experiment=mnist_labels", "method=vat_entmin"]).method
    assert (entmin.eps, entmin.xi) == (1.5, 10.0)
    assert compose_train(["method=vat"]).method.xi == "auto"  # ξ = 10 is the preset's, not a global default


@pytest.mark.parametrize("preset", PRESETS)
def test_method_overrides_name_shipped_methods(preset):
    # a run refuses an entry that names no method; the shipped presets must not need that
    raw = OmegaConf.load(CONFIGS / "experiment" / f"{preset}.yaml").get("method_overrides") or {}
    assert set(raw) <= set(METHODS), preset


def test_method_overrides_reach_their_method_only():
    noise = compose_train(["experiment=noise_vs_gp", "method=noise_consistency"]).method
    gp = compose_train(["experiment=noise_vs_gp", "method=gp_consistency"]).method
    assert noise.track_gp and noise.weight == 10.0 and gp.weight == 0.9
    assert "weight" not in compose_train(["experiment=noise_vs_gp", "method=none"]).method
    assert not compose_train(["method=noise_consistency"]).method.track_gp
    assert compose_train(["experiment=sentiment_frozen", "method=vat"]).method.eps == 2.0
    assert compose_train(["experiment=sentiment_200", "method=vat"]).method.eps == 0.03
    # The command line comes after every preset's settings.
    assert compose_train(["experiment=mnist_labels", "method=vat", "method.eps=0.5"]).method.eps == 0.5


def test_none_vs_vat_sets_eps_of_the_vat_runs():
    cfg = compose_train(["experiment=none_vs_vat"], hydra=True)
    assert str(cfg.hydra.sweeper.params.method) == "none,vat"
    assert compose_train(["experiment=none_vs_vat", "method=vat", "vat_eps=0.3"]).method.eps == 0.3
    assert compose_train(["experiment=none_vs_vat", "method=vat"]).method.eps == 1.0
    assert "eps" not in compose_train(["experiment=none_vs_vat", "method=none", "vat_eps=0.3"]).method


def test_fgm_text_is_sentiment_200_with_fgm():
    fgm, base = (compose_train([f"experiment={e}", "method=none"], hydra=True) for e in ("fgm_text", "sentiment_200"))
    sweeps = fgm.hydra.sweeper.params, base.hydra.sweeper.params
    assert str(sweeps[0].method) == "none,fgm" and sweeps[0].seed == sweeps[1].seed
    strip = ("experiment_name", "hydra")
    assert {k: v for k, v in fgm.items() if k not in strip} == {k: v for k, v in base.items() if k not in strip}
