"""The package reads off its folder names: each subpackage imports only from its own layer or the
layers below it, function-level imports included (a lazy import is still a dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

import genexp

# Lowest first. A package may import from its own layer and any layer before it.
LAYERS: list[set[str]] = [
    {"errors", "locate", "runs", "configs"},  # configs: the yaml files, packaged
    {"data"},
    {"models"},
    {"regularizers"},
    {"methods"},
    {"train"},
    {"tables", "studies"},
    {"cli", "completion", "__main__", "__init__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
ROOT = Path(genexp.__file__).parent


def genexp_imports(path: Path) -> set[str]:
    """The genexp subpackages (or top-level modules) a file imports, wherever the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "genexp" and len(parts) > 1:
                found.add(parts[1])
    return found


def layer_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return rel.parts[0]


def test_every_module_has_a_layer():
    unknown = {layer_of(p) for p in ROOT.rglob("*.py")} - set(RANK)
    assert not unknown, f"add {sorted(unknown)} to LAYERS"


def test_no_import_runs_back_up():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        own = layer_of(path)
        for used in genexp_imports(path):
            if used in RANK and RANK[used] > RANK[own]:
                upward.append(f"{path.relative_to(ROOT)} imports genexp.{used}")
    assert not upward, "\n".join(upward)


def test_the_checker_sees_a_lazy_upward_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from genexp.train.threads import usable_cores\n    return usable_cores()\n")
    assert genexp_imports(bad) == {"train"}
