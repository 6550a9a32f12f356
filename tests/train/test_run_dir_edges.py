"""Issue 34, item 6: the smaller edges of a run dir. Bad input is one line and exit 2 with nothing
written; a full disk is recorded as a full disk; a kill mid-write leaves nothing that outlives the
next session. Runs go through `genexp train` in this process (conftest's `in_process`), tiny."""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import genexp

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

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


# b -------------------------------------------------------------------------------------------

class _NearlyFullDisk(io.FileIO):
    """A file on a disk with `free` bytes left, as write(2) behaves there: a short write, then ENOSPC."""

    free = 2000

    def write(self, b) -> int:
        room = self.free - self.tell()
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(memoryview(b)[:room])


def test_full_disk_during_a_checkpoint_is_recorded_as_a_full_disk(tmp_path, in_process, capsys, monkeypatch):
    real_fdopen = os.fdopen

    def fdopen(fd, *a, **k):  # genexp's own temp files for checkpoints and best.pt land on the full disk
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".checkpoint.pt." in name or ".best.pt." in name:
            return io.BufferedWriter(_NearlyFullDisk(fd, "wb"))
        return real_fdopen(fd, *a, **k)

    monkeypatch.setattr(os, "fdopen", fdopen)
    assert in_process(*TINY, "hydra.run.dir=run") == 1
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    (line,) = _err_lines(capsys)
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    for said in (line, record["reason"]):
        assert "No space left on device" in said and "enforce fail" not in said, said
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


# c -------------------------------------------------------------------------------------------

def _killed_write(directory: Path, name: str) -> Path:
    """What SIGKILL during atomic_write leaves: its temp file, named as atomic_write names it."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.write(fd, b"PK\x03\x04 half a checkpoint")
    os.close(fd)
    return Path(tmp)


def test_resume_removes_the_temp_files_of_a_killed_write_and_only_those(tmp_path, in_process, capsys):
    assert in_process(*TINY, "hydra.run.dir=run") == 0
    run = tmp_path / "run"
    record = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**record, "status": "running"}))  # killed: resumable
    stale = [_killed_write(run, n) for n in ("checkpoint.pt", "checkpoint.pt", "best.pt", "result.json")]
    others = [run / "notes.tmp", run / ".mydata.abcdefgh.tmp", run / ".checkpoint.pt.toolong123.tmp",
              tmp_path / ".checkpoint.pt.abcdefgh.tmp"]  # a user's files; genexp's pattern outside the run dir
    (run / "tb").mkdir(exist_ok=True)
    others.append(_killed_write(run / "tb", "checkpoint.pt"))  # below the run dir: not the run's own
    for p in others[:-1]:
        p.write_text("keep")

    assert in_process("resume=run", "steps=5") == 2  # refused: the dir is left as it was, temp files too
    assert all(p.exists() for p in stale + others)
    capsys.readouterr()
    assert in_process("resume=run") == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in others)
    assert json.loads((run / "result.json").read_text())["status"] == "completed"


# e -------------------------------------------------------------------------------------------

class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_raw_pickle_checkpoint_is_refused_in_one_line_without_torch_warnings(tmp_path, in_process, capsys):
    assert in_process(*TINY, "hydra.run.dir=run") == 0
    run = tmp_path / "run"
    record = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**record, "status": "running"}))
    with open(run / "checkpoint.pt", "wb") as f:  # pickle.dump, not torch.save: no zip, protocol 5
        pickle.dump({"model": _Payload(), "optimizer": {}, "loop": {}}, f, protocol=pickle.HIGHEST_PROTOCOL)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = genexp("train", "resume=run", cwd=tmp_path)  # a process of its own: torch's warnings print once there
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1, r.stderr
    line = r.stderr.strip()
    assert line.startswith("error: resume=run:") and "checkpoint" in line and "weights_only=False" not in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "pwned.txt").exists()


# f -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,key", [("labels=${oc.env:GENEXP_TEST_UNSET}", "labels"),
                                          ("seed=${no_such_key}", "seed"),
                                          ("method.name=${oc.env:GENEXP_TEST_UNSET}", "method.name")])
def test_an_interpolation_in_the_run_dir_name_is_blamed_on_the_key_written(tmp_path, in_process, capsys,
                                                                            monkeypatch, override, key):
    monkeypatch.delenv("GENEXP_TEST_UNSET", raising=False)
    for multirun in ([], ["-m", "hydra.sweep.dir=sweep"]):
        assert in_process(*multirun, *TINY, override) == 2
        lines = [ln for ln in _err_lines(capsys) if not ln.startswith("[")]  # a sweep's Hydra log lines aside
        assert len(lines) == 1, lines
        line = lines[0]
        assert line.startswith(f"error: {override} does not resolve") and f"set {key} to a value" in line, line
        assert "hydra." not in line
        assert _files(tmp_path) == []


def test_already_complete_survives_pickling():
    """torchrun's ranks get a job's decision by pickling it: an already-complete run must come back whole."""
    from genexp.command.run_dir import AlreadyComplete
    from genexp.runs.record import RunRecord

    record = RunRecord.from_json({"status": "completed", "test_acc": 0.5})
    back = pickle.loads(pickle.dumps(AlreadyComplete(Path("/runs/a"), record)))
    assert back.run_dir == Path("/runs/a") and back.record["test_acc"] == 0.5
