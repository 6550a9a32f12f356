"""TAB completion: fast (no torch, no genexp.train: bash runs it at every TAB) and through sweep lists."""
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import genexp


def query(line: str, tmp_path: Path) -> str:
    return genexp("-sc", "query=bash", cwd=tmp_path, env={"COMP_LINE": line, "COMP_POINT": str(len(line))}).stdout


@pytest.mark.parametrize("line,heavy", [("genexp train -m method=none,v", ("torch", "genexp.train")),
                                        ("genexp tr", ("torch", "genexp.train", "hydra"))])
def test_completion_imports_no_training_code(tmp_path, line, heavy):
    code = ("import os, sys; from genexp import cli; os.environ['COMP_LINE'] = sys.argv[1]; "
            "cli.main(['-sc', 'query=bash']); print(sorted(sys.modules))")
    p = subprocess.run([sys.executable, "-c", code, line], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    *completions, modules = p.stdout.splitlines()
    assert completions and completions[0] in ("method=none,vat method=none,vat_embedding_matrix method=none,vat_entmin",
                                              "train")
    assert not [m for m in ast.literal_eval(modules) if m.split(".")[0] in heavy or m.startswith(heavy)]


def test_a_sweep_list_completes_its_next_item(tmp_path):
    assert query("genexp train -m method=none,v", tmp_path).split() == [
        "method=none,vat", "method=none,vat_embedding_matrix", "method=none,vat_entmin"]
    after = query("genexp train -m method=none,vat,", tmp_path).split()
    assert "method=none,vat,fgm" in after and "method=none,vat,uda" in after
    assert not [c for c in after if c.endswith((",none", ",vat"))]  # an item already listed is not offered again
    # a list in an earlier word composes as a sweep: the next key still completes
    assert query("genexp train -m method=none,vat dataset=dig", tmp_path).split() == ["dataset=digits"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_after_a_comma(tmp_path):
    script = '''eval "$(genexp -sc install=bash)"
    tab() { COMP_LINE="$1"; COMP_POINT=${#1}; local w=($1); COMP_CWORD=$((${#w[@]} - 1)); hydra_bash_completion
            echo "${COMPREPLY[*]}"; }
    tab "genexp train -m method=none,fi"'''
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # genexp beside this Python
    p = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PATH": path})
    assert p.returncode == 0 and p.stdout.split() == ["method=none,fixmatch"], p.stdout + p.stderr


def test_a_bad_completion_action_is_one_line(tmp_path):
    p = genexp("-sc", "nosuch", cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.splitlines()) == 1
    assert p.stderr.startswith("error: ") and "install=bash" in p.stderr
