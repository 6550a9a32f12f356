"""`genexp table` over a parent of several sweeps of real (tiny) runs: a block per experiment preset,
rows named by what the user set, values short but distinct, a run found twice counted once."""
import csv
import io
import re
import shutil

import pytest
from helpers import TINY, in_process_train

from genexp.runs.record import RunRecord
from genexp.tables import table
from genexp.tables.cells import load_results, without_copies
from genexp.tables.render import ValueTexts
from genexp.tables.run import Run

SEEDS = "seed=0,1"


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The README's sweeps, tiny: a plain none/vat sweep, the none_vs_vat preset at ε = 0.3, an
    Optuna search over VAT's ε, ξ, α (each at 50 labels)."""
    root = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as mp:
        run = in_process_train(mp, root)
        assert run("-m", "method=none,vat", "labels=50", SEEDS, *TINY, f"hydra.sweep.dir={root / 'plain'}") == 0
        assert run("-m", "experiment=none_vs_vat", "vat_eps=0.3", "labels=50", SEEDS, *TINY,
                   f"hydra.sweep.dir={root / 'preset'}") == 0
    return root


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    with pytest.MonkeyPatch.context() as mp:
        run = in_process_train(mp, root)
        assert run("-m", "experiment=vat_search", "hydra.sweeper.n_trials=3", *TINY,
                   f"hydra.sweep.dir={root / 'search'}") == 0
    return root


def run_table(capsys, *args):
    rc = table.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def blocks(md):
    """{title: [rows' cells]} of each `# ` section's first table (its pivot)."""
    out = {}
    for section in re.split(r"^# ", md, flags=re.M)[1:]:
        title = section.splitlines()[0]
        section = section.split("\n## ")[0]
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
                if line.startswith("|") and not line.startswith("|---")]
        out[title] = rows
    return out


def test_a_parent_of_two_sweeps_has_a_block_per_preset_named_by_what_was_set(sweeps, capsys):
    rc, out, err = run_table(capsys, sweeps, "--out", sweeps / "t")
    assert rc == 0, err
    md = (sweeps / "t.md").read_text()
    got = blocks(md)
    assert list(got) == ["test_acc (%) — no experiment preset, dataset=digits, model=mlp",
                         "test_acc (%) — experiment=none_vs_vat, vat_eps=0.3, dataset=digits, model=mlp"]
    for rows in got.values():
        assert rows[0] == ["method", "50 labels"]
        assert [r[0] for r in rows[1:]] == ["none", "vat"]
        assert all(re.fullmatch(r"(\*\*)?\d+\.\d\d ± \d+\.\d\d \(n=2\)(\*\*)?", r[1]) for r in rows[1:]), rows
    # Rows keyed by what the user set: no internal keys, no placeholders, on the console or in a file.
    for text in (md, out, err, (sweeps / "t.csv").read_text()):
        assert "?" not in text and "method_settings" not in text and "{}" not in text
    assert "runs of 2 experiment presets: a table each" in err


def test_a_copy_and_a_rerun_of_a_run_are_counted_once(sweeps, tmp_path, capsys):
    root = tmp_path / "outputs"
    shutil.copytree(sweeps / "plain", root / "plain")
    original = next((root / "plain").glob("*_vat_l50_s0"))
    shutil.copytree(original, root / "copy" / original.name)
    with pytest.MonkeyPatch.context() as mp:  # the same config and seed run again, elsewhere, on 2 threads
        run = in_process_train(mp, tmp_path)
        assert run("method=vat", "labels=50", "seed=1", *TINY, "cpu_threads=2",
                   f"hydra.run.dir={root / 'rerun'}") == 0
    rc, out, err = run_table(capsys, root, "--format", "csv", "--layout", "flat")
    assert rc == 0, err
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((root / "table.csv").read_text()))}
    assert (rows["vat"]["n"], rows["vat"]["seeds"]) == ("2", "0,1")
    alone = {r.path: r for r in load_results([root / "plain"])}
    accs = sorted(100 * r.record.metrics.test_acc for r in alone.values() if r.record.identity.method == "vat")
    assert float(rows["vat"]["std"]) == pytest.approx(abs(accs[1] - accs[0]) / 2 ** 0.5)
    notes = [line for line in err.splitlines() if "counted once" in line]
    assert len(notes) == 2 and any(str(original) in n and str(root / "copy" / original.name) in n for n in notes)
    rerun_of = next((root / "plain").glob("*_vat_l50_s1"))
    assert any(str(rerun_of) in n and str(root / "rerun") in n for n in notes), notes
    assert "several completed runs with seed" not in err


def test_a_search_is_labelled_by_its_settings_at_3_significant_digits(search, capsys):
    rc, out, err = run_table(capsys, search, "--layout", "pivot")
    assert rc == 0, err
    md = (search / "table.md").read_text()
    [rows] = blocks(md).values()
    assert rows[0] == ["method.eps / method.weight / method.xi", "50 labels"]
    labels = [r[0].split(" / ") for r in rows[1:]]
    assert len(labels) == 3 and len({tuple(x) for x in labels}) == 3
    for eps, weight, _ in labels:
        for v in (eps, weight):
            assert len(re.sub(r"[^0-9]", "", v).lstrip("0")) <= 3, v  # never 0.7501954443620124
    assert "key values at 3 significant digits, more where two would read alike (the CSV has every digit)" in md
    # The CSV keeps every digit: each row's ε is a run's own.
    full = {str(r.config["method.eps"]) for r in load_results([search])}
    rc, _, err = run_table(capsys, search, "--format", "csv", "--layout", "flat")
    assert rc == 0, err
    assert {r["method.eps"] for r in csv.DictReader(io.StringIO((search / "table.csv").read_text()))} == full


def test_compare_and_every_format_keep_each_block(sweeps, search, tmp_path, capsys):
    shutil.copytree(search / "search", sweeps / "search", dirs_exist_ok=True)
    try:
        rc, out, err = run_table(capsys, sweeps, "--compare", "method=none", "--format", "all", "--out", tmp_path / "c")
    finally:
        shutil.rmtree(sweeps / "search")
    assert rc == 0, err
    md = (tmp_path / "c.md").read_text()
    got = blocks(md)
    assert len(got) == 3 and list(got)[2].startswith("test_acc (%) — experiment=vat_search")
    for title in list(got)[:2]:
        header, none, vat = got[title][:3]
        assert header[:4] == ["method", "50 labels", "Δ", "95 % interval"]
        assert none[0] == "none" and none[2] == "baseline" and re.fullmatch(r"[+−]\d+\.\d\d", vat[2].strip("*"))
    # The search has no method=none run: said, and its block stands without Δ.
    assert "experiment=vat_search: not compared" in err and "Δ" not in got[list(got)[2]][0]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "c.csv").read_text())))
    assert {(r["experiment"], r["method"], r["baseline"]) for r in rows if r["experiment"] != "vat_search"} == {
        ("", "none", "self"), ("", "vat", "method=none"),
        ("none_vs_vat", "none", "self"), ("none_vs_vat", "vat", "method=none")}
    assert all(r["n"] == "2" for r in rows if r["experiment"] != "vat_search") and "?" not in "".join(
        v for r in rows for v in r.values())
    tex = (tmp_path / "c.tex").read_text()
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 3
    for spec, body in re.findall(r"\\begin\{tabular\}\{([lr]+)\}(.*?)\\end\{tabular\}", tex, flags=re.S):
        assert all(line.count("&") == len(spec) - 1 for line in body.splitlines() if line.endswith(r"\\"))
    assert "experiment=none\\_vs\\_vat, vat\\_eps=0.3" in tex


def test_values_are_short_but_never_merge_two_runs():
    runs = [Run("r", RunRecord.from_json({"status": "completed"}), {"method.eps": v}) for v in
            ("0.7501954443620124", "0.30001", "0.30004", "1e-06", "8.0", "50", "auto")]
    show = ValueTexts.of(runs, ["method.eps"])
    texts = [show("method.eps", r.config["method.eps"]) for r in runs]
    assert texts == ["0.7502", "0.30001", "0.30004", "1e-06", "8.0", "50", "auto"]
    assert show("method.eps", "?") == "—" and show.rounded
    lone = ValueTexts.of(runs[:1], ["method.eps"])
    assert lone("method.eps", "0.7501954443620124") == "0.75"


def test_a_key_that_copies_another_is_not_a_row_key_of_its_own():
    def run(method, **config):
        return Run("r", RunRecord.from_json({"status": "completed", "method": method}), config)

    # vat_eps sets vat's method.eps (none has none): method.eps says nothing vat_eps does not.
    preset = [run("none", vat_eps="0.3"), run("vat", vat_eps="0.3", **{"method.eps": "0.3"}),
              run("none", vat_eps="1.0"), run("vat", vat_eps="1.0", **{"method.eps": "1.0"})]
    assert without_copies(preset, ["vat_eps", "method.eps"]) == ["vat_eps"]
    # A search's settings each new per trial: none is a copy of another, each stays.
    trials = [run("vat", **{"method.eps": e, "method.weight": w}) for e, w in (("0.1", "2.0"), ("0.5", "3.0"))]
    assert without_copies(trials, ["method.eps", "method.weight"]) == ["method.eps", "method.weight"]
