"""Issue 34, item 6: the smaller edges of a run dir. Bad input is one line and exit 2 with nothing
written; a full disk is recorded as a full disk; a kill mid-write leaves nothing that outlives the
next session. Runs go through `genexp train` in this process (conftest's `in_process`), tiny."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TINY = ["steps=4", "eval_every=2", "checkpoint_every=2", "progress=false", "cpu_threads=1", "labels=20"]


def _err_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.splitlines()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# a -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", np.savez])
def test_empty_or_damaged_npz_is_refused_and_writes_nothing(tmp_path, in_process, capsys, content):
    data = tmp_path / "data.npz"
    if content == np.savez:  # a valid archive with one flipped byte in an array: a bad CRC on reading
        np.savez(data, x=np.random.default_rng(0).random((60, 4)), y=np.arange(60) % 3)
        raw = bytearray(data.read_bytes())
        raw[100] ^= 0xFF
        data.write_bytes(bytes(raw))
    else:
        data.write_bytes(content)
    before = _files(tmp_path)
    assert in_process(*TINY, "dataset=npz", f"dataset.path={data}", "hydra.run.dir=run") == 2
    (line,) = _err_lines(capsys)
    assert line.startswith("error: dataset.path") and str(data.name) in line
    assert _files(tmp_path) == before  # no run dir, failed or otherwise
