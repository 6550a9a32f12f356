"""genexp.locate resolves a `_target_` as Hydra does, without Hydra's private API; and no module of
genexp uses that API."""
import collections
import os.path
from pathlib import Path

import pytest
from helpers import train_cfg

import genexp
from genexp.command.search import is_search
from genexp.locate import locate


def test_resolves_modules_functions_classes_and_their_attributes():
    assert locate("os.path") is os.path
    assert locate("os.path.join") is os.path.join
    assert locate("collections.OrderedDict.fromkeys") == collections.OrderedDict.fromkeys
    assert locate("genexp.methods.vat.VAT").__name__ == "VAT"


def test_imports_a_submodule_its_package_does_not_import(tmp_path, monkeypatch):
    pkg = tmp_path / "locpkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text("def f():\n    return 7\n")
    (pkg / "broken.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert locate("locpkg.sub.mod.f")() == 7
    with pytest.raises(ImportError, match="RuntimeError: boom"):
        locate("locpkg.broken.x")


@pytest.mark.parametrize("path", ["", ".os", "os..path", "no_such_module_xyz.f", "os.path.no_such_function",
                                  "genexp.no_such_module", "os.path.join.nothing"])
def test_what_names_nothing_is_an_import_error(path):
    with pytest.raises(ImportError):
        locate(path)


def test_the_basic_sweeper_is_no_search():
    assert not is_search(train_cfg(hydra_config=True).hydra)
    assert is_search(train_cfg("experiment=vat_search", hydra_config=True).hydra)


def test_no_module_of_genexp_uses_hydras_private_api():
    root = Path(genexp.__file__).parent
    users = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if "hydra._internal" in p.read_text() or "_locate" in p.read_text()]
    assert users == []
