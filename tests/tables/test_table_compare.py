"""`genexp table --compare`: paired differences and their intervals, checked against scipy."""
import csv
import io
import json
import math

import pytest
import yaml
from scipy import stats

from genexp.tables import table


def write_run(root, name, config=None, **result):
    d = root / name
    d.mkdir(parents=True)
    base = {"status": "completed", "dataset": "digits", "model": "mlp", "steps": 100, "labels": 20, "split_seed": 0}
    (d / "result.json").write_text(json.dumps(base | result))
    if config is not None:
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    return d


NONE = [0.801, 0.822, 0.815, 0.840, 0.790]
VAT = [0.823, 0.829, 0.845, 0.851, 0.799]


def config(method, seed, **extra):
    method_node = {"name": method, "_target_": f"genexp.methods.{method}"} | ({"eps": 2.0} if method == "vat" else {})
    return {"seed": seed, "split_seed": 0, "labels": 20, "steps": 100, "method": method_node, "optim": {"lr": 1e-3},
            "cpu_threads": 1, "progress": False} | extra


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "outputs"
    for seed, (a, b) in enumerate(zip(NONE, VAT)):
        write_run(root, f"none_s{seed}", config("none", seed), method="none", seed=seed, test_acc=a, val_acc=a)
        write_run(root, f"vat_s{seed}", config("vat", seed, cpu_threads=2), method="vat", seed=seed,
                  test_acc=b, val_acc=b)
    write_run(root, "vat_s7", config("vat", 7), method="vat", seed=7, test_acc=0.9, val_acc=0.9)  # no partner
    return root


def read_csv(path):
    return {r["method"]: r for r in csv.DictReader(io.StringIO(path.read_text()))}


def run_table(capsys, *args):
    rc = table.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_paired_interval_matches_scipy_and_names_the_unpaired_run(runs, capsys):
    rc, out, err = run_table(capsys, runs, "--compare", "method=none", "--format", "csv,md")
    assert rc == 0, err
    row = read_csv(runs / "table.csv")["vat"]
    a, b = [100 * v for v in VAT], [100 * v for v in NONE]
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert float(row["delta"]) == pytest.approx(sum(x - y for x, y in zip(a, b)) / 5, abs=1e-12)
    assert float(row["ci_low"]) == pytest.approx(ci.low, abs=1e-12)
    assert float(row["ci_high"]) == pytest.approx(ci.high, abs=1e-12)
    assert row["n_pairs"] == "5" and row["unpaired"] == "1"
    assert row["verdict"] == ("better" if ci.low > 0 else "not resolved")
    # the run without a partner is counted and named, on the console and in the Markdown
    assert "1 run(s) without a method=none partner" in err and "vat_s7" in err
    assert "vat_s7" in (runs / "table.md").read_text()
    assert read_csv(runs / "table.csv")["none"]["baseline"] == "self"


def test_pairs_needed_is_the_smallest_n_whose_interval_excludes_zero(runs, capsys):
    run_table(capsys, runs, "--compare", "method=none", "--format", "csv")
    row = read_csv(runs / "table.csv")["vat"]
    delta, sd, n = float(row["delta"]), float(row["sd_diff"]), int(row["pairs_needed"])
    half = lambda k: stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k)  # noqa: E731
    assert half(n) < abs(delta) and (n == 2 or half(n - 1) >= abs(delta))


def test_confidence_level_changes_the_interval(runs, capsys):
    run_table(capsys, runs, "--compare", "method=none", "--format", "csv", "--confidence", "0.8")
    row = read_csv(runs / "table.csv")["vat"]
    ci = stats.ttest_rel([100 * v for v in VAT], [100 * v for v in NONE]).confidence_interval(0.8)
    assert float(row["ci_low"]) == pytest.approx(ci.low, abs=1e-12) and row["confidence"] == "0.8"


def test_single_pair_has_no_interval(tmp_path, capsys):
    root = tmp_path / "o"
    write_run(root, "none", config("none", 0), method="none", seed=0, test_acc=0.8)
    write_run(root, "vat", config("vat", 0), method="vat", seed=0, test_acc=0.85)
    rc, out, err = run_table(capsys, root, "--compare", "method=none", "--format", "csv,md", "--layout", "flat")
    assert rc == 0, err
    row = read_csv(root / "table.csv")["vat"]
    assert row["n_pairs"] == "1" and row["ci_low"] == "" and row["ci_high"] == ""
    assert float(row["delta"]) == pytest.approx(5.0)
    assert "one pair" in err and "no interval" in err
    assert "one pair: no 95 % interval" in (root / "table.md").read_text()


def test_runs_on_other_splits_or_configs_do_not_pair(tmp_path, capsys):
    root = tmp_path / "o"
    for seed in (0, 1):
        write_run(root, f"none_{seed}", config("none", seed), method="none", seed=seed, test_acc=0.80 + seed / 100)
        # same seed, another labelled set: not a pair
        write_run(root, f"vat_{seed}", config("vat", seed, split_seed=5), method="vat", seed=seed, split_seed=5,
                  test_acc=0.85 + seed / 50)
    rc, out, err = run_table(capsys, root, "--compare", "method=none", "--format", "csv", "--layout", "flat")
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO((root / "table.csv").read_text())))
    vat = [r for r in rows if r["method"] == "vat"]
    assert len(vat) == 1 and vat[0]["n_pairs"] == "0" and vat[0]["unpaired"] == "2"
    assert "no run pairs with a method=none run" in err
    # Welch's unpaired interval is offered, and labelled as such
    welch = stats.ttest_ind([85.0, 87.0], [80.0, 81.0], equal_var=False).confidence_interval(0.95)
    assert float(vat[0]["welch_low"]) == pytest.approx(welch.low, abs=1e-9)
    assert vat[0]["delta"] == "" and vat[0]["ci_low"] == ""


def test_a_differing_result_key_like_the_data_fingerprint_breaks_a_pair(tmp_path, capsys):
    root = tmp_path / "o"
    write_run(root, "none", config("none", 0), method="none", seed=0, test_acc=0.8, data_fingerprint="aaaa")
    write_run(root, "vat", config("vat", 0), method="vat", seed=0, test_acc=0.85, data_fingerprint="bbbb")
    run_table(capsys, root, "--compare", "method=none", "--format", "csv", "--layout", "flat")
    assert read_csv(root / "table.csv")["vat"]["n_pairs"] == "0"


def test_compare_on_a_config_key(tmp_path, capsys):
    root = tmp_path / "o"
    for seed in (0, 1, 2):
        for lr, acc in ((1e-3, 0.80), (3e-3, 0.83)):
            write_run(root, f"lr{lr}_{seed}", config("none", seed, optim={"lr": lr}), method="none", seed=seed,
                      test_acc=acc + seed / 100)
    rc, out, err = run_table(capsys, root, "--compare", "optim.lr=0.001", "--format", "csv", "--layout", "flat")
    assert rc == 0, err
    rows = {r["optim.lr"]: r for r in csv.DictReader(io.StringIO((root / "table.csv").read_text()))}
    assert rows["0.003"]["n_pairs"] == "3" and float(rows["0.003"]["delta"]) == pytest.approx(3.0)
    assert rows["0.003"]["verdict"] == "better" and rows["0.003"]["ci_low"] == rows["0.003"]["ci_high"]


@pytest.mark.parametrize("args, needle", [
    (["--compare", "method"], "is not KEY=VALUE"),
    (["--compare", "method=mean_teacher"], "choose one of method=none, method=vat"),
    (["--compare", "nokey=1"], "no run has the key 'nokey'"),
    (["--compare", "method=none", "--confidence", "95"], "between 0 and 1"),
])
def test_bad_compare_is_one_line_exit_2(runs, capsys, args, needle):
    rc, out, err = run_table(capsys, runs, *args)
    assert rc == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_every_format_carries_the_difference(runs, capsys):
    rc, out, err = run_table(capsys, runs, "--compare", "method=none", "--format", "all")
    assert rc == 0, err
    assert "Δ" in out and "+1.58" in out  # the rich table: Δ in a column of its own
    assert "Δ vs method=none" in (runs / "table.md").read_text()
    assert "Δ" in (runs / "table.md").read_text().split("## All groups")[0]  # the pivot too
    tex = (runs / "table.tex").read_text()
    assert r"\Delta" in tex or "Δ" in tex


def test_runs_recorded_before_keys_were_added_share_cells_and_pairs_with_new_runs(tmp_path, capsys):
    """A sweep continued across a genexp that declares new keys (runs.config_keys.ADDED_KEYS) and
    moved a class (MOVED_TARGETS): a run whose config.yaml lacks the keys reads as one that records
    them at their old defaults, so it shares a cell with new runs and pairs with them. compile's
    default changing (false to auto) splits nothing: it says how a run ran."""
    from genexp.runs.config_keys import ADDED_KEYS, MOVED_TARGETS

    def recorded(method, seed, new):
        cfg = config(method, seed, model={"name": "mlp", "hidden": 64}, compile="auto" if new else False)
        cfg["optim"] = {"lr": 1e-3, "schedule": "cosine"}
        if method == "none":
            old_target, new_target = next(iter(MOVED_TARGETS.items()))
            cfg["method"]["_target_"] = new_target if new else old_target
        if new:
            for key, value in ADDED_KEYS.items():
                group, leaf = key.split(".")
                cfg[group][leaf] = value
        return cfg

    root = tmp_path / "o"
    accs = {"none": [0.80, 0.81, 0.79, 0.82], "vat": [0.83, 0.85, 0.80, 0.86]}
    for method, values in accs.items():
        for seed, acc in enumerate(values):
            new = seed >= 2  # seeds 0 and 1 ran before the keys were added, 2 and 3 after
            assert ("freeze" in recorded(method, seed, new)["model"]) == new
            write_run(root, f"{method}_s{seed}", recorded(method, seed, new), method=method, seed=seed,
                      test_acc=acc)
    rc, out, err = run_table(capsys, root, "--compare", "method=none", "--format", "csv", "--layout", "flat")
    assert rc == 0, err
    assert "differ in" not in err and "without a method=none partner" not in err
    rows = list(csv.DictReader(io.StringIO((root / "table.csv").read_text())))
    assert [(r["method"], r["n"]) for r in rows] == [("none", "4"), ("vat", "4")]
    vat = rows[1]
    assert vat["n_pairs"] == "4" and vat["unpaired"] == "0"
    diffs = [100 * (b - a) for a, b in zip(accs["none"], accs["vat"])]
    assert float(vat["delta"]) == pytest.approx(sum(diffs) / 4, abs=1e-9)


def test_an_added_key_recorded_at_another_value_still_splits_the_cell(tmp_path, capsys):
    """Only an absent key reads as its old default: a run that set optim.decay_rate=0.5 is another
    experiment than an old run (which ran with 0.1)."""
    root = tmp_path / "o"
    write_run(root, "old", config("none", 0), method="none", seed=0, test_acc=0.80)
    changed = config("none", 1)
    changed["optim"] |= {"decay_rate": 0.5}
    write_run(root, "new", changed, method="none", seed=1, test_acc=0.81)
    rc, out, err = run_table(capsys, root, "--format", "csv", "--layout", "flat")
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO((root / "table.csv").read_text())))
    assert sorted(r["optim.decay_rate"] for r in rows) == ["0.1", "0.5"]
