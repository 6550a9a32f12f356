"""`genexp bench` takes Hydra overrides on either side of its flags, as `genexp train` does."""
from __future__ import annotations

from typing import Any

import pytest

from genexp.command import bench


@pytest.mark.parametrize("argv", [["method=vat", "--passes", "cpu_threads=1"],
                                  ["--passes", "method=vat", "cpu_threads=1"],
                                  ["method=vat", "cpu_threads=1", "--passes"]])
def test_overrides_after_a_flag_reach_the_run(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    seen: dict[str, Any] = {}

    def fake_run(overrides: list[str], methods: Any, iters: int, warmup: int, textbook: bool, passes: bool,
                 compiled: bool) -> dict:
        seen.update(overrides=overrides, passes=passes)
        return {}

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "print_table", lambda report: None)
    assert bench.main(argv) == 0
    assert seen == {"overrides": ["method=vat", "cpu_threads=1"], "passes": True}
