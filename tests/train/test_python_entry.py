"""The trainer from Python without Hydra (README, "From Python, without Hydra")."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from genexp.errors import GenexpError

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("### From Python, without Hydra", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_written(tmp_path):
    # Only the threads and the bar are added: the README's commands and code are as printed.
    script = ('genexp() { c=$1; shift; "$PYEXE" -m genexp "$c" cpu_threads=1 progress=false "$@"; }\n'
              'python() { "$PYEXE" "$@"; }\n' + readme_example())
    p = subprocess.run(["bash", "-euc", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYEXE": sys.executable})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["0", "completed"], ["1", "completed"]], p.stdout
    results = [json.loads((tmp_path / f"outputs/python/vat_seed{s}/result.json").read_text()) for s in (0, 1)]
    assert [(r["status"], r["method"], r["seed"]) for r in results] == [("completed", "vat", 0), ("completed", "vat", 1)]
    assert all(r["test_acc"] > 0.5 for r in results)  # digits, 50 labels: chance is 10 %


def test_the_trainer_imports_no_hydra_and_refuses_a_used_dir(tmp_path):
    code = ("import sys; import genexp.train; from genexp.train import run; "
            "assert not [m for m in sys.modules if m == 'hydra' or m.startswith('hydra.')], 'hydra imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    from genexp.train import run

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "result.json").write_text("{}")
    with pytest.raises(GenexpError, match="is not empty"):
        run({"seed": 0}, tmp_path / "old")
    with pytest.raises(GenexpError, match="takes a config"):
        run(OmegaConf.create([1]), tmp_path / "new")
