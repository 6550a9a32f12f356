"""Per-method settings of a preset (method_overrides in its yaml): merged into the run's method,
inherited, recorded as the run used them, beaten by the command line, and checked."""
import pytest
import yaml
from helpers import FAST, genexp, train_cfg
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from genexp.errors import GenexpError
from genexp.train.method_overrides import apply_method_overrides

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)


def raw_cfg(*overrides):
    """The composed config before its method_overrides are merged."""
    GlobalHydra.instance().clear()
    with initialize_config_module("genexp.configs", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_an_inherited_preset_gets_its_parents_method_settings():
    # fgm_text includes sentiment_200 in its defaults list, whose VAT ε (chosen on validation) is 0.03
    assert train_cfg("experiment=fgm_text", "method=vat").method.eps == 0.03
    assert train_cfg("experiment=sentiment_200", "method=vat").method.eps == 0.03
    assert train_cfg("method=vat").method.eps == 1.0  # no preset, the method's own default
    for preset in ("mnist_labels", "mnist_cnn"):
        for method in ("vat", "vat_entmin"):
            cfg = train_cfg(f"experiment={preset}", f"method={method}")
            assert (cfg.method.eps, cfg.method.xi) == (1.5, 10.0), (preset, method)
    # mnist_cnn states mnist_labels' VAT settings without including that preset: they must not drift apart
    assert raw_cfg("experiment=mnist_cnn").method_overrides == raw_cfg("experiment=mnist_labels").method_overrides


def test_an_entry_reaches_its_method_only_and_the_command_line_wins():
    assert train_cfg("experiment=fgm_text", "method=fgm").method == train_cfg("method=fgm").method  # vat's ε only
    mt = train_cfg("experiment=cifar10_labels", "method=mean_teacher")
    assert (mt.optim.lr, mt.method.weight) == (4e-4, 8.0)  # an entry's optim: reaches the optimiser
    assert train_cfg("experiment=cifar10_labels", "method=none").optim.lr == 3e-3
    assert train_cfg("experiment=cifar10_labels", "method=mean_teacher", "optim.lr=0.1").optim.lr == 0.1
    cfg = train_cfg("experiment=mnist_labels", "method=vat", "method.eps=0.5")
    assert (cfg.method.eps, cfg.method.xi) == (0.5, 10.0)
    # an entry naming another key stays an interpolation of it
    assert train_cfg("experiment=none_vs_vat", "method=vat", "vat_eps=0.3").method.eps == 0.3


def test_the_map_is_not_recorded_and_the_config_stays_declared():
    cfg = train_cfg("experiment=mnist_labels", "method=vat")
    assert "method_overrides" not in cfg and "method_settings" not in cfg
    assert OmegaConf.is_struct(cfg)


def test_a_user_preset_inherits_and_extends_the_map(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "my_mnist.yaml").write_text(
        "# @package _global_\ndefaults:\n  - mnist_labels\n  - _self_\n"
        "experiment_name: my_mnist\nmethod_overrides:\n  vat:\n    eps: 3.0\n  noise:\n    sigma: 0.5\n")
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    vat = train_cfg(search, "experiment=my_mnist", "method=vat").method
    assert (vat.eps, vat.xi) == (3.0, 10.0)  # its own ε over the parent's, the parent's ξ kept
    assert train_cfg(search, "experiment=my_mnist", "method=vat_entmin").method.eps == 1.5
    assert train_cfg(search, "experiment=my_mnist", "method=noise").method.sigma == 0.5


def test_a_users_own_method_may_have_settings(tmp_path):
    conf = tmp_path / "conf"
    (conf / "method").mkdir(parents=True)
    (conf / "experiment").mkdir()
    (conf / "method" / "my_vat.yaml").write_text("defaults:\n  - vat\n  - _self_\nname: my_vat\n")
    (conf / "experiment" / "mine.yaml").write_text("# @package _global_\nmethod_overrides:\n  my_vat:\n    eps: 4.0\n")
    cfg = train_cfg(f"hydra.searchpath=[file://{conf}]", "experiment=mine", "method=my_vat")
    assert cfg.method.eps == 4.0


def test_a_name_that_is_no_method_is_refused(tmp_path):
    cfg = OmegaConf.create({"method": {"name": "none"}, "method_overrides": {"vta": {"eps": 3.0}}})
    with pytest.raises(GenexpError, match=r"method_overrides.vta names no method \('vta'\): rename it to one of "
                                          r".*none, .*vat, "):
        apply_method_overrides(cfg)
    with pytest.raises(GenexpError, match="method_overrides.vat=3.0 must map the method's keys"):
        apply_method_overrides(OmegaConf.create({"method": {"name": "vat"}, "method_overrides": {"vat": 3.0}}))


def test_a_run_refuses_a_preset_naming_no_method(tmp_path):
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "typo.yaml").write_text("# @package _global_\ndefaults:\n  - none_vs_vat\n  - _self_\n"
                                    "method_overrides:\n  vta:\n    eps: 3.0\n")
    r = genexp("train", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=typo", "method=none", *FAST,
               cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "method_overrides.vta names no method ('vta'): rename it to one of " in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


def test_cfg_job_shows_the_presets_setting(tmp_path):
    r = genexp("train", "experiment=fgm_text", "method=vat", "--cfg", "job", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["method_overrides"]["vat"]["eps"] == 0.03


def test_config_yaml_records_the_merged_settings(tmp_path):
    r = genexp("train", "experiment=digits_none_vs_vat", "method=vat", "+method_overrides.vat.eps=2.5",
               "hydra.run.dir=run", "steps=2", "eval_every=1", "checkpoint_every=2", "progress=false",
               "cpu_threads=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert recorded["method"]["eps"] == 2.5 and "method_overrides" not in recorded
