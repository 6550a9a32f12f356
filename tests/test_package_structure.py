"""The package reads off its folder names: each subpackage imports only from its own layer or the
layers below it, function-level imports included (a lazy import is still a dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

import genexp

# Lowest first. A package may import from its own layer and any layer before it.
LAYERS: list[set[str]] = [
    {"errors", "locate", "instantiate", "runs", "configs"},  # configs: the yaml files, packaged
    {"data"},
    {"models"},
    {"regularizers"},
    {"methods"},
    {"train"},
    {"command", "tables", "studies"},  # command: `genexp train` (Hydra) and `genexp bench` around the trainer
    {"cli", "completion", "__main__", "__init__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
ROOT = Path(genexp.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, wherever the import stands (a lazy import is still one), and
    each name a `from` import takes (module.name: `from genexp import cli` uses genexp.cli)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def genexp_imports(path: Path) -> set[str]:
    """The genexp subpackages (or top-level modules) a file imports."""
    return {name.split(".")[1] for name in imported_modules(path) if name.startswith("genexp.")}


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


def test_the_trainer_runs_without_hydra():
    """genexp.train is usable from a notebook or another tool: Hydra is the command's (genexp.command)."""
    uses = [f"{path.relative_to(ROOT)} imports {name}" for path in sorted((ROOT / "train").rglob("*.py"))
            for name in sorted(imported_modules(path)) if name == "hydra" or name.startswith("hydra.")]
    assert not uses, "\n".join(uses)


def test_no_private_hydra_api_anywhere():
    private = [f"{path.relative_to(ROOT)} imports {name}" for path in sorted(ROOT.rglob("*.py"))
               for name in sorted(imported_modules(path)) if name.startswith("hydra._internal") or name.endswith("_locate")]
    assert not private, "\n".join(private)


def test_no_function_over_60_lines():
    """A reader sees a whole function on one screen (nanoGPT's step, not a 200-line main)."""
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted(ROOT.rglob("*.py")) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert not long, "\n".join(long)


def test_the_loop_stays_short():
    assert len((ROOT / "train" / "loop.py").read_text().splitlines()) <= 300
