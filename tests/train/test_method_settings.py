"""Per-method preset settings: chosen by the preset's defaults list, inherited, shown, and checked."""
import yaml
from helpers import genexp, train_cfg


def test_an_inherited_preset_gets_its_parents_method_settings():
    # fgm_text inherits sentiment_200, whose VAT ε (chosen on validation) is 0.03
    assert train_cfg("experiment=fgm_text", "method=vat").method.eps == 0.03
    assert train_cfg("experiment=sentiment_200", "method=vat").method.eps == 0.03
    assert train_cfg("method=vat").method.eps == 1.0  # no preset, the method's own default
    cfg = train_cfg("experiment=mnist_labels", "method=vat_entmin")
    assert (cfg.method.eps, cfg.method.xi) == (1.5, 10.0)


def test_cfg_job_shows_the_setting(tmp_path):
    r = genexp("train", "experiment=fgm_text", "method=vat", "--cfg", "job", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["method"]["eps"] == 0.03 and "eps: 0.03" in r.stdout


def test_a_file_for_an_unknown_method_is_refused(tmp_path):
    bad = tmp_path / "conf" / "method_preset" / "none_vs_vat"
    bad.mkdir(parents=True)
    (bad / "vta.yaml").write_text("method:\n  eps: 3.0\n")
    r = genexp("train", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=none_vs_vat", "method=none",
               "steps=5", "progress=false", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "method_preset/none_vs_vat/vta.yaml names no method" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()
