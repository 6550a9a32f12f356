"""`genexp plot` on fabricated run directories with metrics.jsonl."""
import json
import math

import pytest

from genexp.tables import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fabricate(root, with_metrics=True):
    for method, bonus in (("none", 0.0), ("vat", 0.05)):
        for labels in (20, 100):
            for seed in range(3):
                d = root / f"{method}_l{labels}_s{seed}"
                d.mkdir(parents=True)
                failed = method == "vat" and labels == 100 and seed == 2
                acc = 0.6 + 0.002 * labels + bonus + 0.01 * seed
                r = {"status": "failed" if failed else "completed", "dataset": "digits", "model": "mlp",
                     "method": method, "labels": labels, "seed": seed}
                if not failed:
                    r |= {"test_acc": acc, "val_acc": acc}
                (d / "result.json").write_text(json.dumps(r))
                if with_metrics:
                    with (d / "metrics.jsonl").open("w") as f:
                        for step in range(10, 101, 10):
                            v = acc * (1 - math.exp(-step / 30))
                            f.write(json.dumps({"step": step, "val_acc": v, "test_acc": v - 0.01}) + "\n")
                        if failed:
                            f.write('{"step": 110, "val_')  # torn line of a run that died mid-write


def pngs(out):
    files = sorted(out.glob("*.png"))
    for f in files:
        data = f.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, f
    return [f.name for f in files]


def test_plots_written(tmp_path, capsys):
    fabricate(tmp_path / "outputs")
    rc = plot.main([str(tmp_path / "outputs"), "--out", str(tmp_path / "figs")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert pngs(tmp_path / "figs") == ["curves_digits_mlp_l100.png", "curves_digits_mlp_l20.png",
                                       "labels_digits_mlp_test_acc.png"]
    assert out.count("wrote ") == 3


def test_error_metric_and_default_out(tmp_path, capsys):
    fabricate(tmp_path / "outputs", with_metrics=False)
    rc = plot.main([str(tmp_path / "outputs"), "--metric", "test_err"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    assert pngs(tmp_path / "outputs" / "plots") == ["labels_digits_mlp_test_err.png"]
    assert "no metrics.jsonl" in err  # curves skipped, and said so


def test_read_metrics_skips_torn_lines(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "val_acc": 0.5}\n{"step": 2, "va')
    assert plot.read_metrics(tmp_path) == [{"step": 1, "val_acc": 0.5}]


@pytest.mark.parametrize("args,needle", [(["{missing}"], "does not exist"),
                                         (["{root}", "--metric", "nope"], "nope")])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    fabricate(tmp_path / "outputs", with_metrics=False)
    fill = {"missing": tmp_path / "nope", "root": tmp_path / "outputs"}
    rc = plot.main([a.format(**fill) for a in args])
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_curves_of_chosen_metrics_keys(tmp_path, capsys):
    fabricate(tmp_path / "runs")
    out = tmp_path / "png"
    assert plot.main([str(tmp_path / "runs"), "--out", str(out), "--curves", "test_acc"]) == 0
    assert "curves_digits_mlp_l20_test_acc.png" in pngs(out)
    assert plot.main([str(tmp_path / "runs"), "--curves", " , "]) == 2
    assert "--curves is empty" in capsys.readouterr().err


def test_unknown_curve_key_is_refused(tmp_path, capsys):
    # Issue 14: --curves nosuchkey used to skip the panel silently.
    fabricate(tmp_path / "runs")
    assert plot.main([str(tmp_path / "runs"), "--curves", "val_acc,nosuchkey"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --curves nosuchkey") and "test_acc" in err[0]
    assert not (tmp_path / "runs" / "plots").exists()


def test_runs_that_tables_keep_apart_are_separate_lines(tmp_path, capsys, monkeypatch):
    root = tmp_path / "o"
    for steps in (100, 300):
        for seed in range(2):
            d = root / f"vat_{steps}_s{seed}"
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps({
                "status": "completed", "dataset": "digits", "model": "mlp", "method": "vat", "labels": 20,
                "seed": seed, "steps": steps, "test_acc": 0.5 + steps / 1000, "val_acc": 0.5}))
            (d / "metrics.jsonl").write_text(json.dumps({"step": 10, "val_acc": 0.5, "test_acc": 0.5}) + "\n")
    legends = []
    real_save = plot._save

    def record(fig, path):
        legends.append(sorted(t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()))
        real_save(fig, path)

    monkeypatch.setattr(plot, "_save", record)
    assert plot.main([str(root)]) == 0
    err = capsys.readouterr().err
    assert "runs differ in steps" in err
    assert legends and all(len(lg) == 2 for lg in legends), legends
    assert any("steps=100" in t for t in legends[0]) and any("steps=300" in t for t in legends[0])


@pytest.mark.parametrize("records", [['{"score": 0.9, "status": "completed"}', '{"accuracy": 0.8}'],
                                     ['[1, 2]', '{not json'], ['{"score": 0.9}']])
def test_a_dir_without_genexp_runs_is_refused_and_left_alone(tmp_path, capsys, records):
    # Issue 34: another tool's result.json files used to give exit 0 and an empty chart in their dir.
    for i, text in enumerate(records):
        (tmp_path / "theirs" / str(i)).mkdir(parents=True)
        (tmp_path / "theirs" / str(i) / "result.json").write_text(text)
    before = sorted(tmp_path.rglob("*"))
    assert plot.main([str(tmp_path / "theirs")]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: no genexp run under"), err
    assert sorted(tmp_path.rglob("*")) == before

    fabricate(tmp_path / "theirs" / "ours", with_metrics=False)  # mixed in: only genexp's runs are drawn
    assert plot.main([str(tmp_path / "theirs"), "--out", str(tmp_path / "png")]) == 0
    assert pngs(tmp_path / "png") == ["labels_digits_mlp_test_acc.png"]
    assert f"{len(records)} result.json" in capsys.readouterr().err


# --------------------------------------------------------------------------- forest plot (--compare, issue 36)


def fabricate_compare(root, methods=(("none", 0.0), ("vat", 0.04), ("fixmatch", 0.005)), labels=(20,), seeds=5):
    """Completed runs with result.json and config.yaml; a seed's runs share a noise term, as pairs do."""
    import random

    rng = random.Random(0)
    for seed in range(seeds):
        for n in labels:
            shared = rng.gauss(0, 0.02)
            for method, bonus in methods:
                d = root / f"{method}_l{n}_s{seed}"
                d.mkdir(parents=True)
                acc = 0.6 + 0.001 * n + bonus + shared + rng.gauss(0, 0.005)
                (d / "result.json").write_text(json.dumps({
                    "status": "completed", "dataset": "digits", "model": "mlp", "method": method, "labels": n,
                    "seed": seed, "test_acc": acc, "val_acc": acc}))
                eps = "" if method == "none" else "\n  eps: 2.0"
                (d / "config.yaml").write_text(f"seed: {seed}\nlabels: {n}\nmethod:\n  name: {method}{eps}\n")


def forest_figures(root, metric="test_acc", compare="method=none"):
    from genexp.tables.compare import Baseline
    from genexp.tables.table import load_results, parse_metric

    results = load_results([root])
    m, base = parse_metric(metric), Baseline.parse(compare)
    extra = plot.differing_keys(results, plot.PLOT_KEYS)
    return {key: (rows, plot.forest_figure(rows, m, base, 0.95, "t"))
            for key, rows in plot.forest_rows(results, m, base, 0.95, extra).items()}


def assert_outside(fig, legend, axes):
    """The legend's box, as the renderer draws it, overlaps none of the axes' data areas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # a figure already saved and closed has lost its Agg canvas
    canvas.draw()
    renderer = canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    for ax in axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), (box, ax.get_window_extent(renderer))


def test_forest_plot_written_with_the_tables_pairs(tmp_path, capsys):
    fabricate_compare(tmp_path / "runs", labels=(20, 100))
    out = tmp_path / "figs"
    rc = plot.main([str(tmp_path / "runs"), "--compare", "method=none", "--out", str(out), "--format", "png,pdf"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "forest_digits_mlp_test_acc_vs_method_none.png" in pngs(out)
    assert (out / "forest_digits_mlp_test_acc_vs_method_none.pdf").read_bytes().startswith(b"%PDF")
    assert "wrote " + str(out / "forest_digits_mlp_test_acc_vs_method_none.png") in stdout

    ((rows, fig),) = forest_figures(tmp_path / "runs").values()
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == ["fixmatch, labels=20", "fixmatch, labels=100", "vat, labels=20", "vat, labels=100"]
    assert not any("?" in n for n in names)
    assert ax.get_xlabel() == "paired Δ test accuracy (percentage points)"
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["5 pairs"] * 4  # the pairs beside each row
    # The points are the table's Δ, from genexp.tables.compare: drawn top to bottom in the rows' order.
    points = sorted(((line.get_ydata()[0], line.get_xdata()[0]) for line in ax.get_lines()
                     if len(line.get_xdata()) == 1), reverse=True)
    assert [x for _, x in points] == pytest.approx([r.comparison.delta for r in rows])
    filled = {r.name: r.resolved for r in rows}
    assert filled["vat, labels=20"] and filled["vat, labels=100"] and not filled["fixmatch, labels=20"]
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[0].startswith("filled: resolved") and texts[1].startswith("open: not resolved")
    assert not any("?" in t for t in texts)
    assert_outside(fig, legend, fig.axes)


def test_forest_plot_names_rows_by_what_differs_and_other_metrics(tmp_path):
    fabricate_compare(tmp_path / "runs")  # one labels value: rows are the methods alone
    ((rows, fig),) = forest_figures(tmp_path / "runs", metric="test_err").values()
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["fixmatch", "vat"]
    assert fig.axes[0].get_xlabel() == "paired Δ test error (percentage points)"
    ((_, fig),) = forest_figures(tmp_path / "runs", compare="method=vat").values()
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["none", "fixmatch"]


def test_forest_rows_without_an_interval_are_drawn_apart_and_said(tmp_path):
    fabricate_compare(tmp_path / "runs", methods=(("none", 0.0), ("vat", 0.04)))
    for seed, method in ((0, "uda"), (10, "mixmatch"), (11, "mixmatch")):  # one pair; no pairs at all
        d = tmp_path / "runs" / f"{method}_{seed}"
        d.mkdir()
        (d / "result.json").write_text(json.dumps({"status": "completed", "dataset": "digits", "model": "mlp",
                                                   "method": method, "labels": 20, "seed": seed,
                                                   "test_acc": 0.6 + seed / 1000}))
        (d / "config.yaml").write_text(f"seed: {seed}\nlabels: 20\nmethod:\n  name: {method}\n")
    ((rows, fig),) = forest_figures(tmp_path / "runs").values()
    assert [r.name for r in rows] == ["mixmatch", "uda", "vat"]
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == [
        "0 pairs (Welch, unpaired)", "1 pair: no interval", "5 pairs"]
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [t.split(":")[0] for t in texts] == ["filled", "open, no whiskers", "open square"]


@pytest.mark.parametrize("name,words", [("test_acc", "test accuracy (%)"), ("val_err", "validation error (%)"),
                                        ("test_acc_final", "test accuracy at the last step (%)"),
                                        ("train_time_s", "training time (s)"), ("my_score", "my score")])
def test_metric_labels_are_words(name, words):
    assert plot.metric_label(plot.parse_metric(name)) == words


def test_one_labels_value_has_no_vs_labels_chart(tmp_path, capsys):
    fabricate_compare(tmp_path / "runs")
    out = tmp_path / "figs"
    assert plot.main([str(tmp_path / "runs"), "--compare", "method=none", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert pngs(out) == ["forest_digits_mlp_test_acc_vs_method_none.png"]
    notes = [line for line in err.splitlines() if "labels value" in line]
    assert notes == ["note: digits/mlp: one labels value (20): no test accuracy-vs-labels chart (it would be one "
                     "point per line)"]


def test_legends_of_other_charts_are_outside_the_axes_and_never_show_unset(tmp_path, monkeypatch):
    fabricate(tmp_path / "runs")
    for seed, steps in ((0, 50), (1, 100)):  # a key the other runs lack: lines of their own, none named "?"
        (tmp_path / "runs" / f"none_l20_s{seed}" / "result.json").write_text(json.dumps({
            "status": "completed", "dataset": "digits", "model": "mlp", "method": "none", "labels": 20,
            "seed": seed, "test_acc": 0.6, "val_acc": 0.6, "steps": steps}))
    figs = []
    monkeypatch.setattr(plot, "_save", lambda fig, path: figs.append(fig))
    assert plot.main([str(tmp_path / "runs")]) == 0
    assert figs
    for fig in figs:
        legend_axes = [ax for ax in fig.axes if ax.get_legend()]
        assert legend_axes
        for ax in legend_axes:
            assert_outside(fig, ax.get_legend(), fig.axes)
            assert not any("?" in t.get_text() for t in ax.get_legend().get_texts())
        assert not any("_" in ax.get_ylabel() + ax.get_xlabel() + ax.get_title() for ax in fig.axes)
    assert any("steps not set" in t.get_text() for t in figs[0].axes[0].get_legend().get_texts())


@pytest.mark.parametrize("args,needle", [
    (["--compare", "nosuchkey=1"], "no run has the key 'nosuchkey'"),
    (["--compare", "method=nosuch"], "no completed run has method=nosuch"),
    (["--compare", "method"], "is not KEY=VALUE"),
    (["--format", "bmp"], "--format 'bmp'")])
def test_bad_compare_is_one_line_exit_2(tmp_path, capsys, args, needle):
    fabricate_compare(tmp_path / "runs")
    before = sorted(tmp_path.rglob("*"))
    assert plot.main([str(tmp_path / "runs"), *args]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert sorted(tmp_path.rglob("*")) == before


def test_a_copied_run_is_drawn_once(tmp_path, capsys):
    import shutil

    fabricate_compare(tmp_path / "runs")
    original = tmp_path / "runs" / "vat_l20_s0"
    shutil.copytree(original, tmp_path / "runs" / "copy" / original.name)
    out = tmp_path / "figs"
    rc = plot.main([str(tmp_path / "runs"), "--compare", "method=none", "--out", str(out)])
    _, err = capsys.readouterr()
    assert rc == 0, err
    notes = [line for line in err.splitlines() if "counted once" in line]
    assert len(notes) == 1 and str(original) in notes[0] and str(tmp_path / "runs" / "copy") in notes[0], err
    from genexp.tables.table import parse_metric

    runs = plot.plotted_runs([tmp_path / "runs"], parse_metric("test_acc"))
    assert len([r for r in runs if r.get("method") == "vat" and r.get("seed") == 0]) == 1
    assert len(runs) == 15  # 3 methods x 5 seeds, the copy left out


def test_forest_row_names_show_a_search_s_values_at_three_significant_digits(tmp_path):
    import random

    rng = random.Random(1)
    for seed in range(4):
        shared = rng.gauss(0, 0.02)
        for method, eps, bonus in (("none", None, 0.0), ("vat", "0.7501954443620124", 0.03),
                                   ("vat", "1.252065381499947", 0.04)):
            d = tmp_path / "runs" / f"{method}_{eps}_s{seed}"
            d.mkdir(parents=True)
            acc = 0.7 + bonus + shared + rng.gauss(0, 0.003)
            (d / "result.json").write_text(json.dumps({
                "status": "completed", "dataset": "digits", "model": "mlp", "method": method, "labels": 50,
                "seed": seed, "test_acc": acc, "val_acc": acc}))
            (d / "config.yaml").write_text(f"seed: {seed}\nlabels: 50\nmethod:\n  name: {method}\n"
                                           + (f"  eps: {eps}\n" if eps else ""))
    ((rows, fig),) = forest_figures(tmp_path / "runs").values()
    names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert names == ["vat, method.eps=0.75", "vat, method.eps=1.25"], names
