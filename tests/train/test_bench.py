import json

import pytest
from helpers import genexp

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)


def test_bench_json_reports_ratios_and_floor(tmp_path):
    p = genexp("bench", "method=vat", "batch_size=16", "unlabeled_batch_size=32", "--iters", "2", "--warmup", "1",
               "--textbook", "--passes", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    rows = {r["method"]: r for r in report["rows"]}
    assert set(rows) == {"none", "vat", "vat (textbook port)"}
    # every ratio is that row's median time over the supervised row's, and its floor ratio follows
    for r in rows.values():
        assert abs(r["ratio"] - r["ms"] / rows["none"]["ms"]) < 1e-9
        if r["floor"]:
            assert abs(r["ratio_to_floor"] - r["ratio"] / r["floor"]) < 1e-9
    assert rows["vat"]["ratio"] > 1  # VAT's extra passes cannot be free
    # (3l + 4u + 2u) / 3l with l=16, u=32, one power iteration
    assert abs(rows["vat"]["floor"] - (3 * 16 + 6 * 32) / (3 * 16)) < 1e-9
    for r in rows.values():
        assert r["ms"] > 0 and r["ms_with_data"] > 0 and r["samples_per_s"] > 0 and r["peak_mem_mb"] > 0
    # --passes: each pass of the cost model timed alone, with its rows and forward units
    passes = {p["pass"]: p for p in report["passes"]}
    assert [(p["rows"], p["units"]) for p in passes.values()] == [(16, 48), (16, None), (32, 32), (32, 64), (32, 96), (32, 96)]
    assert all(p["ms"] > 0 for p in passes.values()) and report["passes_floor"] > 1
    t = {name: p["ms"] for name, p in passes.items()}
    genexp_s = sum(t.values()) - t["forward + backward (input and weights)"]
    port_s = genexp_s - t["forward + gradient w.r.t. the input only"] + t["forward + backward (input and weights)"]
    assert abs(report["port_passes_ratio"] - port_s / genexp_s) < 1e-9


def test_bench_bad_override_is_one_line(tmp_path):
    p = genexp("bench", "model=nope", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1
