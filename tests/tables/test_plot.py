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
