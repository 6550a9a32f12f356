"""Issue 34, item 3: a resumed run's split.json is data, not trusted.

The split is a function of the run's config (split_seed, labels, labeled_strategy, val_size,
unlabeled_includes_labeled) and its data: resume draws it again and refuses a saved one that
differs, or one that is not a split at all, with one line and exit 2, leaving the run dir as it
was (an interrupted run stays resumable). Runs go through `genexp train` in this process, a few
steps on the default digits data, stopped after step 2 by a real SIGTERM.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import in_process_train

from genexp.data.split import Split, make_split
from genexp.errors import GenexpError

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

TINY = ["steps=6", "eval_every=2", "checkpoint_every=2", "progress=false", "cpu_threads=1", "labels=20",
        "model.widths=[16]"]


def interrupted_run(monkeypatch: pytest.MonkeyPatch, cwd: Path, run_dir: Path, *args: str) -> None:
    """A run stopped by SIGTERM after step 2 of 6 (checkpoint saved, `status: interrupted`)."""
    import genexp.train.loop as loop

    real = loop.stopping

    def sigterm_at_2(s, stop, done):
        if done == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the run's own handler takes it, as from Slurm
        return real(s, stop, done)

    run = in_process_train(monkeypatch, cwd)
    with monkeypatch.context() as m:
        m.setattr(loop, "stopping", sigterm_at_2)
        assert run(*TINY, *args, f"hydra.run.dir={run_dir}") == 128 + signal.SIGTERM
    assert json.loads((run_dir / "result.json").read_text())["status"] == "interrupted"


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stopped")
    with pytest.MonkeyPatch.context() as mp:
        interrupted_run(mp, root, root / "run")
    return root / "run"


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: its bytes (files), mode and mtime: what "nothing changed" means."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, p.stat().st_mode, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [ln for ln in err.splitlines() if ln.strip()]


@pytest.fixture
def copy(stopped, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(stopped, dst)  # copy2: mtimes kept, so the snapshot compares them too
    return dst


def _saved(run: Path) -> dict[str, list[int]]:
    return json.loads((run / "split.json").read_text())


def _refused(in_process, capsys, run: Path, expect: str) -> None:
    """Resume is refused in one line, exit 2, and the run dir is as it was: still interrupted."""
    before = _snapshot(run)
    capsys.readouterr()
    assert in_process(f"resume={run}") == 2
    (line,) = _error_lines(capsys)
    assert line.startswith("error: ") and expect in line and "nothing was changed" in line, line
    assert _snapshot(run) == before
    assert json.loads((run / "result.json").read_text())["status"] == "interrupted"


def _honest_resume(in_process, run: Path, original: bytes) -> dict:
    (run / "split.json").write_bytes(original)
    assert in_process(f"resume={run}") == 0
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and result["n_labeled"] == result["labels"] == 20
    return result


def _write(run: Path, split: dict) -> bytes:
    original = (run / "split.json").read_bytes()
    (run / "split.json").write_text(json.dumps(split))
    return original


def test_more_labelled_examples_than_labels_is_refused(copy, in_process, capsys):
    s = _saved(copy)
    original = _write(copy, {**s, "labeled": sorted(s["labeled"] + s["unlabeled"])})  # every pool row labelled
    _refused(in_process, capsys, copy, f"{len(s['labeled']) + len(s['unlabeled'])} labelled indices where the "
                                       f"config draws 20")
    _honest_resume(in_process, copy, original)


def test_validation_indices_inside_the_labelled_set_are_refused(copy, in_process, capsys):
    s = _saved(copy)
    # Same count: half the labelled rows swapped for validation rows (which the model is then selected on).
    _write(copy, {**s, "labeled": sorted(s["labeled"][:10] + s["val"][:10])})
    _refused(in_process, capsys, copy, "validation indices inside the training set")


@pytest.mark.parametrize("where", ["labeled", "unlabeled", "val"])
def test_negative_indices_are_refused(copy, in_process, capsys, where):
    s = _saved(copy)
    s[where] = [-1, *s[where][1:]]  # would wrap to the last training row
    _write(copy, s)
    _refused(in_process, capsys, copy, "index -1 is outside the")


@pytest.mark.parametrize("change", ["another draw", "reordered", "past the end"])
def test_any_other_split_is_refused(copy, in_process, capsys, change):
    s = _saved(copy)
    if change == "another draw":  # a valid split of the same sizes: one labelled row traded for an unlabelled one
        s["labeled"], s["unlabeled"] = (sorted([*s["labeled"][1:], s["unlabeled"][0]]),
                                        sorted([*s["unlabeled"][1:], s["labeled"][0]]))
        expect = "other labelled indices"
    elif change == "reordered":  # the sampler draws positions in the list: order is part of the split
        s["labeled"] = s["labeled"][::-1]
        expect = "other labelled indices"
    else:
        s["val"] = [*s["val"][:-1], 10**6]
        expect = "validation index 1000000 is outside the"
    _write(copy, s)
    _refused(in_process, capsys, copy, expect)


MALFORMED = {
    "empty": b"",
    "not JSON": b"{labeled: [1, 2",
    "binary": bytes(range(256)),
    "a list": b"[[1, 2], [3], [4]]",
    "missing key": json.dumps({"labeled": [1], "unlabeled": [2]}).encode(),
    "extra key": json.dumps({"labeled": [1], "unlabeled": [2], "val": [3], "test": [4]}).encode(),
    "floats": json.dumps({"labeled": [1.5], "unlabeled": [2], "val": [3]}).encode(),
    "bools": json.dumps({"labeled": [True], "unlabeled": [2], "val": [3]}).encode(),
    "strings": json.dumps({"labeled": "1,2", "unlabeled": [2], "val": [3]}).encode(),
    "nested": json.dumps({"labeled": [[1, 2]], "unlabeled": [2], "val": [3]}).encode(),
    "null": json.dumps({"labeled": None, "unlabeled": [2], "val": [3]}).encode(),
    "huge int": b'{"labeled": [100000000000000000000000], "unlabeled": [2], "val": [3]}',
    "deep": b"[" * 100000 + b"]" * 100000,
}


@pytest.mark.parametrize("name", [*MALFORMED, "a directory", "a FIFO"])
def test_malformed_split_json_exits_2_and_the_run_stays_resumable(copy, in_process, capsys, name):
    original = (copy / "split.json").read_bytes()
    (copy / "split.json").unlink()
    if name == "a directory":
        (copy / "split.json").mkdir()
    elif name == "a FIFO":
        os.mkfifo(copy / "split.json")  # reading it would block forever
    else:
        (copy / "split.json").write_bytes(MALFORMED[name])
    def blocked(signum, frame):
        raise AssertionError("resume blocked reading split.json")

    old = signal.signal(signal.SIGALRM, blocked)  # a resume that opens the FIFO fails the test, not hangs it
    signal.alarm(120)
    try:
        _refused(in_process, capsys, copy, "split.json")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    if name == "a directory":
        (copy / "split.json").rmdir()
    else:
        (copy / "split.json").unlink()
    _honest_resume(in_process, copy, original)


def test_the_same_split_reformatted_is_accepted(copy, in_process):
    original = (copy / "split.json").read_bytes()
    (copy / "split.json").write_text(json.dumps(_saved(copy), indent=2))
    result = _honest_resume(in_process, copy, (copy / "split.json").read_bytes())
    assert (copy / "split.json").read_bytes() != original and result["n_labeled"] == 20


def test_honest_resume_with_per_seed_split_and_labels_all_is_accepted(tmp_path, monkeypatch):
    # seed=2 with split_seed=per_seed: the split is drawn with the run's seed, not split_seed's default 0.
    args = ("split_seed=per_seed", "seed=2", "labels=all", "unlabeled_includes_labeled=true")
    interrupted_run(monkeypatch, tmp_path, tmp_path / "run", *args)
    saved = _saved(tmp_path / "run")
    assert saved["labeled"] == saved["unlabeled"] and not set(saved["val"]) & set(saved["labeled"])
    run = in_process_train(monkeypatch, tmp_path)
    assert run(f"resume={tmp_path / 'run'}") == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "completed" and result["n_labeled"] == len(saved["labeled"])


@pytest.mark.parametrize("kw", [{}, {"labels": "all"}, {"unlabeled_includes_labeled": True}, {"val_size": 0},
                                {"strategy": "random"}, {"strategy": "first"}])
def test_check_saved_split_accepts_its_own_draw_only(tmp_path, kw):
    from genexp.data.split import check_saved_split

    y = np.arange(300) % 3
    kw = {"labels": 30, "num_classes": 3, "val_size": 0.1, **kw}
    drawn = make_split(y, split_seed=0, **kw)
    drawn.save(tmp_path / "split.json")
    check_saved_split(tmp_path / "split.json", drawn, len(y))
    assert Split.load(tmp_path / "split.json").labeled.tolist() == drawn.labeled.tolist()
    other = make_split(y, split_seed=1, **kw)
    if any(not np.array_equal(getattr(drawn, k), getattr(other, k)) for k in ("labeled", "unlabeled", "val")):
        with pytest.raises(GenexpError, match="is not the split this run's config draws"):
            check_saved_split(tmp_path / "split.json", other, len(y))
