"""`genexp table` on fabricated run directories (result.json written directly)."""
import csv
import io
import json
import re
import statistics

import pytest
from helpers import genexp

from genexp.tables import table


def write_run(root, name, **result):
    d = root / name
    d.mkdir(parents=True)
    base = {"status": "completed", "dataset": "digits", "model": "mlp", "steps": 100}
    (d / "result.json").write_text(json.dumps(base | result))
    return d


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "outputs"
    for seed, acc in enumerate((0.80, 0.82, 0.84)):
        write_run(root, f"none_l20_s{seed}", method="none", labels=20, seed=seed, test_acc=acc, val_acc=acc)
    for seed, acc in enumerate((0.85, 0.87)):
        write_run(root, f"vat_l20_s{seed}", method="vat", labels=20, seed=seed, test_acc=acc, val_acc=acc)
    write_run(root, "vat_l20_s2", method="vat", labels=20, seed=2, status="failed", reason="Diverged: nan")
    write_run(root, "none_l50_s0", method="none", labels=50, seed=0, test_acc=0.90, val_acc=0.9)
    for seed, acc in enumerate((0.88, 0.89)):
        write_run(root, f"vat_l50_s{seed}", method="vat", labels=50, seed=seed, test_acc=acc, val_acc=acc)
    write_run(root, "vat_l50_s2", method="vat", labels=50, seed=2, status="running")
    return root


def run_table(capsys, *args):
    rc = table.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def md_row(md, label):
    """The cells of the Markdown row whose first cell is `label`."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in\n{md}")


def test_pivot_mean_std_n_failed_and_bold(runs, capsys):
    rc, out, err = run_table(capsys, runs)
    assert rc == 0, err
    md = (runs / "table.md").read_text()
    header = md_row(md, "method")
    assert header == ["method", "20 labels", "50 labels"]
    none, vat = md_row(md, "none"), md_row(md, "vat")
    # none@20: 80, 82, 84 -> mean 82, sample std 2 (population std would be 1.63)
    assert none[1] == "82.00 ± 2.00 (n=3)"
    assert vat[1] == f"**86.00 ± {statistics.stdev([85, 87]):.2f} (n=2, 1 failed)**"
    assert none[2] == "**90.00 (n=1)**"  # a single seed: no std, but still the best at 50
    assert vat[2] == "88.50 ± 0.71 (n=2, 1 incomplete)"
    pivot = md.split("## All groups")[0]
    assert pivot.count("**") == 4  # exactly two bold cells: the best of each column
    # the flat section stays compatible with `| dataset | model | method | labels |` rows
    assert "| digits | mlp | vat | 20 |" in md and "| digits | mlp | none | 20 |" in md


def test_test_err_is_100_minus_acc_and_best_is_min(runs, capsys):
    rc, _, err = run_table(capsys, runs, "--metric", "test_err", "--layout", "pivot", "--out", runs / "err")
    assert rc == 0, err
    md = (runs / "err.md").read_text()
    assert md_row(md, "none")[1] == "18.00 ± 2.00 (n=3)"
    assert md_row(md, "vat")[1].startswith("**14.00 ± 1.41")  # lower error is better
    assert md_row(md, "vat")[2] == "11.50 ± 0.71 (n=2, 1 incomplete)"
    assert md_row(md, "none")[2] == "**10.00 (n=1)**"


def test_csv_values_exact_and_counts(runs, capsys):
    rc, _, err = run_table(capsys, runs)
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO((runs / "table.csv").read_text())))
    by = {(r["method"], r["labels"]): r for r in rows}
    r = by[("vat", "20")]
    assert float(r["mean"]) == pytest.approx(86.0, abs=1e-12)
    assert float(r["std"]) == pytest.approx(statistics.stdev([85.0, 87.0]), abs=1e-12)
    assert (r["n"], r["failed"], r["incomplete"], r["seeds"]) == ("2", "1", "0", "0,1")
    assert (by[("vat", "50")]["incomplete"], by[("none", "50")]["std"]) == ("1", "")


def test_flat_layout_with_by(runs, capsys):
    rc, out, err = run_table(capsys, runs, "--by", "method,labels", "--out", runs / "flat")
    assert rc == 0, err
    md = (runs / "flat.md").read_text()
    assert "| vat | 20 | **86.00 ± 1.41** | 2 | 1 |" in md
    assert "| vat | 50 | 88.50 ± 0.71 | 2 | 0 (+1 incomplete) |" in md
    assert "| none | 50 | **90.00** | 1 | 0 |" in md
    assert "20 labels" not in md  # no pivot


def test_builtin_references_shown_as_labelled_rows(runs, capsys):
    for name, dataset, labels in (("c", "cifar10", 4000), ("t", "tweets", 200), ("i", "imdb", 25000)):
        write_run(runs, name, dataset=dataset, method="vat", labels=labels, seed=0, test_acc=0.5)
    rc, out, err = run_table(capsys, runs, "--reference", "builtin", "--metric", "test_err", "--format", "all")
    assert rc == 0, err
    md = (runs / "table.md").read_text()
    row = md_row(md, "*published [2]: vat (CIFAR-10)*")
    assert "13.86" in row and md_row(md, "dataset / method")[row.index("13.86")] == "4000 labels"
    assert "13.13" in md_row(md, "*published [2]: vat_entmin (CIFAR-10)*")
    assert "20.26" in md_row(md, "*published [2]: none (CIFAR-10)*")
    # 7466 publishes accuracies: shown as errors in a test_err table, 100 - 90.37
    assert f"{100 - 90.37:.2f}" in md_row(md, "*published [1]: vat (Chinese sentiment)*")
    assert "https://kexue.fm/archives/7466" in md and "https://arxiv.org/abs/1804.09170" in md
    assert "7.33" in md and "5.91" in md
    # published cells are never bold
    assert not re.search(r"\*\*[^*]*13\.86", md)
    published = [r for r in csv.DictReader(io.StringIO((runs / "table.csv").read_text())) if r["kind"] == "published"]
    assert {r["url"] for r in published} >= {"https://kexue.fm/archives/7466", "https://arxiv.org/abs/1804.09170",
                                             "https://arxiv.org/abs/1605.07725"}


def test_shipped_reference_figures():
    refs = {r.short: r for r in table.load_references(table.BUILTIN_REFERENCES)}
    su = next(r for k, r in refs.items() if "7466" in k)
    assert (su.metric, su.labels, su.values) == ("test_acc", "200", {"none": 89.34, "vat": 90.37})
    oliver = next(r for k, r in refs.items() if "Oliver" in k)
    assert (oliver.metric, oliver.labels) == ("test_err", "4000")
    assert oliver.values == {"none": 20.26, "vat": 13.86, "vat_entmin": 13.13}
    miyato = next(r for k, r in refs.items() if "Miyato" in k)
    assert (miyato.metric, miyato.values) == ("test_err", {"none": 7.33, "vat": 5.91})
    assert all(r.url.startswith("https://") and r.source for r in refs.values())


def test_reference_in_a_genexp_column(runs, tmp_path, capsys):
    ref = tmp_path / "ref.yaml"
    ref.write_text("references:\n  - source: Someone (2024). A paper\n    url: https://example.org/p\n"
                   "    short: Someone 2024\n    dataset: digits\n    labels: 20\n    metric: test_acc\n"
                   "    values: {vat: 99.5}\n")
    rc, _, err = run_table(capsys, runs, "--reference", ref, "--layout", "pivot")
    assert rc == 0, err
    md = (runs / "table.md").read_text()
    assert md_row(md, "*published [1]: vat (digits)*")[1:] == ["99.50", ""]
    assert md_row(md, "vat")[1].startswith("**86.00")  # the best genexp cell stays bold, the reference never is
    assert "Someone (2024). A paper. https://example.org/p" in md


def test_latex_parses_ish(runs, capsys):
    write_run(runs, "gp_param_l20_s0", method="gp_param", labels=20, seed=0, test_acc=0.5)
    rc, _, err = run_table(capsys, runs, "--format", "latex", "--reference", "builtin")
    assert rc == 0, err
    tex = (runs / "table.tex").read_text()
    assert not (runs / "table.md").exists()
    for env in ("table", "tabular"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") == 1
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)
    rows = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert len(rows) >= 4 and all(line.count("&") == len(spec) - 1 for line in rows)
    assert r"gp\_param" in tex and r"$\mathbf{86.00 \pm 1.41}$" in tex
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert not re.search(r"(?<!\\)[%#_]", body.replace(r"\%", "").replace(r"\_", "").replace(r"\#", ""))
    assert body.count("{") == body.count("}") and body.count("$") % 2 == 0
    assert r"\toprule" in tex and r"\bottomrule" in tex


def test_unreadable_and_pooled_runs_are_reported(runs, capsys):
    (runs / "broken").mkdir()
    (runs / "broken" / "result.json").write_text("{not json")
    write_run(runs, "none_l20_long", method="none", labels=20, seed=5, test_acc=0.5, steps=999)
    rc, out, err = run_table(capsys, runs)
    assert rc == 0
    assert "unreadable result.json" in err and "runs differ in steps" in err
    md = (runs / "table.md").read_text()
    # The 999-step run is a different experiment: a row of its own, never pooled with the 100-step runs.
    assert md_row(md, "none / 100")[1] == "82.00 ± 2.00 (n=3)" and md_row(md, "none / 999")[1] == "50.00 (n=1)"
    assert "1 incomplete" in md  # the unreadable run shows up as incomplete, not silently dropped


@pytest.mark.parametrize("args,needle", [
    (["{missing}"], "does not exist"),
    (["{root}", "--metric", "nope"], "no completed run has a numeric 'nope'"),
    (["{root}", "--by", "nokey"], "no run has the key 'nokey'"),
    (["{root}", "--reference", "{missing}.yaml"], "--reference"),
    (["{root}", "--format", "pdf"], "--format"),
    (["{empty}"], "no result.json"),
])
def test_bad_input_is_one_line_exit_2(runs, tmp_path, capsys, args, needle):
    (tmp_path / "empty").mkdir()
    fill = {"missing": tmp_path / "nope", "root": runs, "empty": tmp_path / "empty"}
    rc, out, err = run_table(capsys, *(a.format(**fill) for a in args))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_cli_bad_dir_through_genexp(tmp_path):
    p = genexp("table", "does_not_exist", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and p.stderr.startswith("error: ")
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("name,higher", [("test_acc", True), ("train_acc_final", True), ("test_err", False),
                                         ("train_vat_final", False), ("train_sup_final", False),
                                         ("step_time_ms", False), ("wall_time_s", False)])
def test_which_direction_is_best(name, higher):
    assert table.parse_metric(name).higher_is_better is higher


def write_configured_run(root, name, seed, acc, lr=0.001, eps=8.0, path=None):
    """A run as genexp records it: result.json beside its resolved config.yaml."""
    import yaml

    d = write_run(root, name, method="vat", labels=20, seed=seed, test_acc=acc, val_acc=acc,
                  dataset="npz" if path else "digits")
    config = {"seed": seed, "labels": 20, "steps": 100, "device": "cpu", "progress": False,
              "dataset": {"name": "npz" if path else "digits", "path": path},
              "method": {"name": "vat", "eps": eps, "xi": 1e-6}, "optim": {"lr": lr, "weight_decay": 0.0}}
    (d / "config.yaml").write_text(yaml.safe_dump(config))


def test_runs_with_different_configs_are_never_pooled(tmp_path, capsys):
    # Two sweeps of method=vat, one with eps=50 and lr=0.05, are two experiments: never one cell.
    root = tmp_path / "outputs"
    for seed, acc in enumerate((0.80, 0.82)):
        write_configured_run(root, f"default_s{seed}", seed, acc)
    write_configured_run(root, "tuned_s0", 0, 0.95, lr=0.05, eps=50.0)
    rc, out, err = run_table(capsys, root, "--layout", "pivot")
    assert rc == 0, err
    assert "runs differ in method.eps, optim.lr" in err
    md = (root / "table.md").read_text()
    assert md_row(md, "8.0 / 0.001")[1] == "81.00 ± 1.41 (n=2)" and md_row(md, "50.0 / 0.05")[1] == "**95.00 (n=1)**"
    # Any resolved config key groups: --by method,optim.lr
    rc, out, err = run_table(capsys, root, "--by", "method,optim.lr,method.eps", "--out", root / "flat")
    assert rc == 0 and "differ" not in err, err
    rows = {(r["optim.lr"], r["n"]) for r in csv.DictReader(io.StringIO((root / "flat.csv").read_text()))}
    assert rows == {("0.001", "2"), ("0.05", "1")}
    # Two different npz files never pool under "npz".
    npz = tmp_path / "npz"
    write_configured_run(npz, "a", 0, 0.7, path="/data/a.npz")
    write_configured_run(npz, "b", 1, 0.6, path="/data/b.npz")
    rc, out, err = run_table(capsys, npz, "--by", "dataset.path", "--out", npz / "t")
    assert rc == 0 and "differ" not in err, err
    rc, out, err = run_table(capsys, npz, "--layout", "flat")
    assert rc == 0 and "runs differ in dataset.path" in err
    rows = list(csv.DictReader(io.StringIO((npz / "table.csv").read_text())))
    assert sorted((r["dataset.path"], r["n"]) for r in rows) == [("/data/a.npz", "1"), ("/data/b.npz", "1")]


def test_references_only_for_the_tables_datasets(runs, tmp_path, capsys):
    # A digits table gets no CIFAR-10 / IMDB / Chinese-sentiment rows: they are context for other data.
    rc, out, err = run_table(capsys, runs, "--reference", "builtin")
    assert rc == 0, err
    md = (runs / "table.md").read_text()
    assert "published" not in md and "CIFAR-10" not in md and "published figure set(s) for other datasets" in err
    # Matched ignoring case and punctuation (dataset: MNIST ~ genexp's mnist), or by genexp_dataset.
    ref = tmp_path / "ref.yaml"
    ref.write_text("references:\n"
                   "  - {source: A, url: https://a.org, dataset: MNIST, labels: 100, metric: test_err, values: {vat: 1.4}}\n"
                   "  - {source: B, url: https://b.org, dataset: Tweets (English), genexp_dataset: [tweets],"
                   " labels: 200, metric: test_acc, values: {vat: 80.0}}\n"
                   "  - {source: C, url: https://c.org, dataset: CIFAR-10, labels: 4000, metric: test_err,"
                   " values: {vat: 13.9}}\n")
    other = tmp_path / "other"
    write_run(other, "m", dataset="mnist", method="vat", labels=100, seed=0, test_acc=0.98)
    write_run(other, "t", dataset="tweets", method="vat", labels=200, seed=0, test_acc=0.8)
    rc, out, err = run_table(capsys, other, "--reference", ref, "--layout", "pivot")
    assert rc == 0, err
    md = (other / "table.md").read_text()
    assert "published [1]: vat (MNIST)" in md and "published [2]: vat (Tweets (English))" in md
    assert "CIFAR-10" not in md and "1 published figure set(s) for other datasets not shown (CIFAR-10)" in err


def test_a_table_of_several_dirs_goes_beside_them_not_into_the_first(runs, tmp_path, capsys):
    a, b = runs / "none_l20_s0", runs / "vat_l20_s0"
    (a / "table.md").write_text("a's own table\n")
    rc, out, err = run_table(capsys, a, b)
    assert rc == 0, err
    assert (a / "table.md").read_text() == "a's own table\n"
    assert (runs / "table_none_l20_s0+vat_l20_s0.md").exists() and "table_none_l20_s0+vat_l20_s0.md" in out


def test_different_data_is_never_pooled(tmp_path, capsys):
    root = tmp_path / "o"
    write_run(root, "a", method="none", labels=20, seed=0, test_acc=0.9, data_fingerprint="aaaa")
    write_run(root, "b", method="none", labels=20, seed=1, test_acc=0.1, data_fingerprint="bbbb")
    rc, out, err = run_table(capsys, root, "--format", "csv", "--layout", "flat")
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO((root / "table.csv").read_text())))
    assert len(rows) == 2 and {r["n"] for r in rows} == {"1"} and "data_fingerprint" in err
