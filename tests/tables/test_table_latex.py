"""`genexp table --compare` for a paper: Δ and its interval in columns of their own, real minus signs,
bold only on a resolved improvement; `--correction holm|bonferroni` checked against statsmodels."""
import csv
import io
import re

import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from test_table_compare import config, run_table, write_run

NONE = [80.0, 81.0, 82.0, 83.0, 84.0]
DIFFS = {
    "vat": [2.0, 2.1, 1.9, 2.2, 2.0],  # a resolved improvement
    "pseudo_label": [-1.0, -1.2, -0.9, -1.1, -1.0],  # resolved, worse
    "mean_teacher": [6.0, -3.0, 8.0, -2.0, 5.0],  # the largest mean, not resolved
}
# For --correction: one row survives, one is resolved unadjusted (p = 0.037) but not after, one never is.
FAMILY = {"vat": DIFFS["vat"], "pseudo_label": [0.5, 1.8, 0.1, 1.2, 0.9], "mean_teacher": [1.0, -1.0, 0.5, -0.2, 0.3]}


def make_runs(root, diffs):
    for seed, acc in enumerate(NONE):
        write_run(root, f"none_s{seed}", config("none", seed), method="none", seed=seed, test_acc=acc / 100)
        for method, d in diffs.items():
            write_run(root, f"{method}_s{seed}", config(method, seed), method=method, seed=seed,
                      test_acc=(acc + d[seed]) / 100)
    return root


def csv_rows(path):
    return {r["method"]: r for r in csv.DictReader(io.StringIO(path.read_text()))}


def tex_row(tex, method):
    """The cells of the LaTeX row with `method` among its label cells."""
    for line in tex.splitlines():
        cells = [c.strip() for c in line.removesuffix(r"\\").split("&")]
        if method.replace("_", r"\_") in cells[:4]:
            return cells
    raise AssertionError(f"no row {method!r} in\n{tex}")


def outside_math(text):
    return re.sub(r"\$[^$]*\$", "", text)


@pytest.mark.parametrize("layout", ["pivot", "flat"])
def test_latex_has_delta_and_interval_columns_real_minus_and_bold_only_on_a_resolved_improvement(
        tmp_path, capsys, layout):
    root = make_runs(tmp_path / "o", DIFFS)
    rc, out, err = run_table(capsys, root, "--compare", "method=none", "--format", "latex,csv,md", "--layout", layout)
    assert rc == 0, err
    tex = (root / "table.tex").read_text()
    heads = tex_row(tex, "method")
    delta_col = next(i for i, h in enumerate(heads) if h.startswith(r"$\Delta$"))
    assert "interval" in heads[delta_col + 1]  # Δ and its interval: columns of their own
    vat, pl, mt = (tex_row(tex, m) for m in ("vat", "pseudo_label", "mean_teacher"))
    assert vat[delta_col] == r"$\mathbf{+2.04}$" and vat[delta_col + 1].startswith(r"$\mathbf{[+")
    # real minus signs: in math mode, never a hyphen (or a bare U+2212) in the text
    assert pl[delta_col] == "$-1.04$" and re.fullmatch(r"\$\[-\d+\.\d+, -\d+\.\d+\]\$", pl[delta_col + 1])
    assert "\u2212" not in tex
    body = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert not any(re.search(r"-\d", outside_math(line)) for line in body)
    # bold: the resolved improvement only; not the resolved worse row, not the unresolved largest mean
    assert sum(r"\mathbf" in c for c in vat) == 2
    assert not any(r"\mathbf" in c for c in pl + mt)
    assert tex.count(r"\mathbf") == 2
    verdicts = {m: r["verdict"] for m, r in csv_rows(root / "table.csv").items() if m != "none"}
    assert verdicts == {"vat": "better", "pseudo_label": "worse", "mean_teacher": "not resolved"}
    # people read U+2212 in Markdown; the CSV stays machine-readable
    md = (root / "table.md").read_text()
    assert "\u22121.04" in md and "-1.04" not in md
    raw = (root / "table.csv").read_text()
    assert "\u2212" not in raw and ",-1.04" in raw
    assert float(csv_rows(root / "table.csv")["pseudo_label"]["delta"]) == pytest.approx(-1.04)


@pytest.mark.parametrize("method", ["holm", "bonferroni"])
def test_correction_adjusts_p_values_as_statsmodels_does_and_flips_a_verdict(tmp_path, capsys, method):
    root = make_runs(tmp_path / "o", FAMILY)
    rc, out, err = run_table(capsys, root, "--compare", "method=none", "--format", "csv", "--layout", "flat")
    assert rc == 0, err
    plain = csv_rows(root / "table.csv")
    rc, out, err = run_table(capsys, root, "--compare", "method=none", "--format", "csv,latex", "--layout", "flat",
                             "--correction", method)
    assert rc == 0, err
    adjusted = csv_rows(root / "table.csv")
    names = sorted(FAMILY)
    p = [stats.ttest_rel([a + d for a, d in zip(NONE, FAMILY[m])], NONE).pvalue for m in names]
    expected = multipletests(p, alpha=0.05, method=method)[1]
    for m, pv, pa in zip(names, p, expected):
        assert float(plain[m]["p_value"]) == pytest.approx(pv, rel=1e-9)
        assert plain[m]["p_adjusted"] == "" and plain[m]["correction"] == "none"
        assert float(adjusted[m]["p_value"]) == pytest.approx(pv, rel=1e-9)
        assert float(adjusted[m]["p_adjusted"]) == pytest.approx(pa, rel=1e-9)
        assert adjusted[m]["correction"] == method
        # the interval stays the row's own Student-t interval
        assert adjusted[m]["ci_low"] == plain[m]["ci_low"] and adjusted[m]["ci_high"] == plain[m]["ci_high"]
    assert adjusted["none"]["p_value"] == "" and adjusted["none"]["baseline"] == "self"
    # resolved unadjusted (p = 0.037), not after the correction; the strong row survives
    assert plain["pseudo_label"]["verdict"] == "better" and float(plain["pseudo_label"]["ci_low"]) > 0
    assert adjusted["pseudo_label"]["verdict"] == "not resolved"
    assert adjusted["vat"]["verdict"] == "better" and adjusted["mean_teacher"]["verdict"] == "not resolved"
    tex = (root / "table.tex").read_text()
    assert f"p ({method})" in tex and tex.count(r"\mathbf") == 2  # only vat's Δ and interval
    assert "not adjusted" in tex  # the caption says the intervals are per row


@pytest.mark.parametrize("args, needle", [
    (["--compare", "method=none", "--correction", "fdr"], "--correction 'fdr' is not one of holm, bonferroni"),
    (["--correction", "holm"], "add --compare"),
])
def test_bad_correction_is_one_line_exit_2(tmp_path, capsys, args, needle):
    root = make_runs(tmp_path / "o", DIFFS)
    rc, out, err = run_table(capsys, root, *args)
    assert rc == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
