"""split_seed=per_seed: each seed of a sweep draws its own labelled set, shared by every method at that seed."""
import csv
import io
import json

import pytest
from helpers import FAST, genexp

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)


def _labeled(run_dir):
    return sorted(json.loads((run_dir / "split.json").read_text())["labeled"])


def test_per_seed_split_differs_across_seeds_not_methods_and_tables_pool_it(tmp_path):
    sweep = tmp_path / "sweep"
    r = genexp("train", "-m", "method=none,vat", "seed=0,1", "split_seed=per_seed", "labels=20", "model.widths=[16]",
               *FAST, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = {}
    for d in sweep.iterdir():
        if (d / "result.json").exists():
            res = json.loads((d / "result.json").read_text())
            runs[(res["method"], res["seed"])] = (d, res)
    assert len(runs) == 4
    for (method, seed), (d, res) in runs.items():
        assert res["split_seed"] == "per_seed" and res["split_seed_drawn"] == seed
    assert _labeled(runs["none", 0][0]) == _labeled(runs["vat", 0][0])
    assert _labeled(runs["none", 1][0]) == _labeled(runs["vat", 1][0])
    assert _labeled(runs["none", 0][0]) != _labeled(runs["none", 1][0])
    # one row per method (the draws are the replicates), and the pairs follow the seeds
    t = genexp("table", str(sweep), "--compare", "method=none", "--format", "csv", "--layout", "flat", cwd=tmp_path)
    assert t.returncode == 0, t.stderr
    rows = list(csv.DictReader(io.StringIO((sweep / "table.csv").read_text())))
    assert [r["method"] for r in rows] == ["none", "vat"] and rows[1]["n_pairs"] == "2"


def test_default_split_is_shared_by_every_seed(tmp_path):
    sweep = tmp_path / "sweep"
    r = genexp("train", "-m", "method=none", "seed=0,1", "labels=20", "model.widths=[16]", *FAST,
               f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    dirs = sorted(d for d in sweep.iterdir() if (d / "split.json").exists())
    assert len(dirs) == 2 and _labeled(dirs[0]) == _labeled(dirs[1])


def test_bad_split_seed_names_per_seed(tmp_path):
    r = genexp("train", "split_seed=each", *FAST, cwd=tmp_path)
    assert r.returncode == 2 and "split_seed=per_seed" in r.stderr and "Traceback" not in r.stderr
