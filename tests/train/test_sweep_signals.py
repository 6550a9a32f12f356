"""Real signals to real sweeps (joblib workers, and the basic launcher in-process): every run
saves and records `interrupted` (or is complete), the parent exits 128+signum, no process of the
sweep is left running, and the command it prints finishes the sweep as printed."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import genexp

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

# Slow enough to be signalled while training, short enough to be finished by the resume.
STEPS = 3000
RUN = [f"steps={STEPS}", "eval_every=500", "checkpoint_every=500", "model.widths=[16]", "cpu_threads=1",
       "progress=false"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
START_TIMEOUT = 180  # two cores shared with other jobs: starting two workers (torch imports) is slow


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    # Its own session: a signal to its process group is what Ctrl-C at a terminal sends, without
    # reaching pytest.
    return subprocess.Popen([sys.executable, "-m", "genexp", "train", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a live process, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def descendants(root: int) -> set[int]:
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()
                    and (s := proc_stat(int(e.name))) is not None and s[1] in frontier} - found
        found |= frontier
    return found


def running_runs(sweep: Path) -> list[Path]:
    out = []
    for path in sweep.glob("*/result.json"):
        try:
            if json.loads(path.read_text()).get("status") == "running":
                out.append(path.parent)
        except (OSError, ValueError):
            pass  # being written
    return out


def wait_until_training(p: subprocess.Popen, sweep_glob: Path, runs: int, pids: set[int]) -> Path:
    """Wait until `runs` runs of the sweep under `sweep_glob` (a dir, or a dir whose single
    subdir is the sweep) record `running`, collecting the sweep's processes meanwhile."""
    deadline = time.time() + START_TIMEOUT
    while time.time() < deadline and p.poll() is None:
        pids |= descendants(p.pid)
        sweeps = [d for d in [sweep_glob, *sweep_glob.glob("*")] if (d / "multirun.yaml").exists()]
        if sweeps and len(running_runs(sweeps[0])) >= runs:
            pids |= descendants(p.pid)
            return sweeps[0]
        time.sleep(0.2)
    p.kill()
    out, err = p.communicate()
    pytest.fail(f"the sweep did not start {runs} runs in time (rc {p.returncode}): {err[-2000:]}")


def assert_nothing_left(pids: set[int], within_s: float = 30,
                        what: str = "processes of the sweep still running after it exited") -> None:
    deadline = time.time() + within_s
    alive = pids
    while alive and time.time() < deadline:
        # A zombie has exited (and a container's init may not reap it at once).
        alive = {pid for pid in pids if (s := proc_stat(pid)) is not None and s[0] != "Z"}
        time.sleep(0.2)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"{what}: {sorted(alive)}"


def assert_saved(sweep: Path, expected_signal: str, at_least: int) -> list[Path]:
    import torch

    runs = sorted(p.parent for p in sweep.glob("*/result.json"))
    assert len(runs) >= at_least
    interrupted = []
    for run in runs:
        record = json.loads((run / "result.json").read_text())
        assert record["status"] in ("interrupted", "completed"), (run, record)
        step = torch.load(run / "checkpoint.pt", weights_only=True)["loop"]["step"]
        if record["status"] == "interrupted":
            assert record["signal"] == expected_signal and step == record["step"], (run, record, step)
            interrupted.append(run)
        assert not (run / ".checkpoint.pt.tmp").exists()
    return interrupted


def finish_with_printed_command(err: str, sweep: Path, cwd: Path, runs: int, interrupted: list[Path]) -> None:
    last = err.strip().splitlines()[-1]
    assert "finish it with: " in last, err
    args = shlex.split(last.split("finish it with: ", 1)[1])
    assert args[:2] == ["genexp", "train"] and "resume=true" in args, args
    assert f"hydra.sweep.dir={sweep.absolute()}" in args, args
    r = genexp(*args[1:], cwd=cwd, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    records = {p.parent: json.loads(p.read_text()) for p in sweep.glob("*/result.json")}
    assert len(records) == runs and all(r["status"] == "completed" for r in records.values()), records
    for run in interrupted:  # continued from its checkpoint, not started again
        assert "resuming" in (run / "genexp.log").read_text()
        lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
        steps = [x["step"] for x in lines if "test_acc" in x]  # evaluations, not log_every's lines
        assert steps == list(range(500, STEPS + 1, 500)), steps


def stop_sweep(args: list[str], cwd: Path, watch: Path, running: int, send, code: int) -> tuple[Path, str, set[int]]:
    """Start `genexp train <args>`, wait until `running` of its runs train, `send(process)` a
    signal, and check it exits `code` without a traceback: (the sweep dir, stderr, the pids seen)."""
    p = start(args, cwd)
    pids: set[int] = set()
    sweep = wait_until_training(p, watch, running, pids)
    send(p)
    out, err = p.communicate(timeout=180)
    assert p.returncode == code, err
    assert "Traceback" not in err, err
    return sweep, err, pids


def test_sigterm_to_the_parent_of_a_joblib_sweep(tmp_path):
    sweep = tmp_path / "the sweep"  # a space: the printed command must quote it
    _, err, pids = stop_sweep(["-m", *JOBLIB, "seed=0,1", *RUN, f"hydra.sweep.dir={sweep}"], tmp_path, sweep, 2,
                              lambda p: p.send_signal(signal.SIGTERM), 143)
    assert pids, "no worker processes were seen"
    assert_nothing_left(pids)
    interrupted = assert_saved(sweep, "SIGTERM", 2)
    assert interrupted, "no run was interrupted"
    finish_with_printed_command(err, sweep, tmp_path, 2, interrupted)


def test_ctrl_c_to_a_joblib_sweep_with_a_run_still_queued(tmp_path):
    # SIGINT to the whole process group (a terminal's Ctrl-C); no hydra.sweep.dir given, and a
    # third run waits for a free worker: it must not start after the signal, and the resume starts it.
    sweep, err, pids = stop_sweep(["-m", *JOBLIB, "seed=0,1,2", *RUN], tmp_path, tmp_path / "outputs" / "multirun", 2,
                                  lambda p: os.killpg(p.pid, signal.SIGINT), 130)
    assert_nothing_left(pids)
    interrupted = assert_saved(sweep, "SIGINT", 2)
    assert len(interrupted) >= 1
    finish_with_printed_command(err, sweep, tmp_path, 3, interrupted)


def test_sigterm_to_a_basic_sweep(tmp_path):
    sweep = tmp_path / "sw"
    _, err, _ = stop_sweep(["-m", "seed=0,1", *RUN, f"hydra.sweep.dir={sweep}"], tmp_path, sweep, 1,
                           lambda p: p.send_signal(signal.SIGTERM), 143)
    interrupted = assert_saved(sweep, "SIGTERM", 1)
    assert len(interrupted) == 1 and len(list(sweep.glob("*/result.json"))) == 1  # the second never started
    finish_with_printed_command(err, sweep, tmp_path, 2, interrupted)


def test_sigterm_to_a_submitit_local_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sw"
    _, err, pids = stop_sweep(["-m", "hydra/launcher=submitit_local", "seed=0,1", *RUN, f"hydra.sweep.dir={sweep}"],
                              tmp_path, sweep, 2, lambda p: p.send_signal(signal.SIGTERM), 143)
    assert_nothing_left(pids)
    assert len(assert_saved(sweep, "SIGTERM", 2)) >= 1
    assert f"hydra.sweep.dir={sweep}" in err.strip().splitlines()[-1]


def test_a_running_sweeps_dir_is_its_own(in_process, capsys, tmp_path):
    """A second sweep into a running sweep's dir is refused (with or without resume=true; the race
    of two starting together, deterministically: a dir claimed by a live process), and a run
    started into a subdir of the sweep is not counted in the sweep's last line."""
    from genexp.command.claim import claim

    def refused(*args: str) -> str:
        capsys.readouterr()
        code = in_process("-m", "seed=0,1", *tiny, *args)
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "in use" in lines[0] and "hydra.sweep.dir" in lines[0], (code, lines)
        return lines[0]

    tiny = ["steps=20", "eval_every=10", "model.widths=[16]", "cpu_threads=1", "progress=false"]
    held = tmp_path / "held"
    claimed = claim(held, create=True)  # what a sweep that has just started holds
    try:
        before = {p.name: p.read_bytes() for p in held.iterdir()}
        refused(f"hydra.sweep.dir={held}")
        assert {p.name: p.read_bytes() for p in held.iterdir()} == before
    finally:
        claimed.release()

    sweep = tmp_path / "sw"
    p = start(["-m", "seed=0,1", "steps=100000", *RUN[1:], f"hydra.sweep.dir={sweep}"], tmp_path)
    try:
        wait_until_training(p, sweep, 1, set())
        refused(f"hydra.sweep.dir={sweep}")
        refused("resume=true", f"hydra.sweep.dir={sweep}")
        assert len([d for d in sweep.iterdir() if d.is_dir()]) == 1  # the second sweep started no run
        assert in_process(*tiny, f"hydra.run.dir={sweep / 'extra'}") == 0
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=180)
    assert p.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert f"sweep {sweep} stopped by SIGTERM: 0 completed, 0 failed, 1 interrupted;" in last, err


def test_sigkill_to_the_parent_of_a_joblib_sweep_stops_its_workers(tmp_path):
    """Its workers save and record their runs as on SIGTERM, then exit, and so does loky's resource tracker."""
    from genexp.command.claim import claim

    sweep = tmp_path / "sw"
    args = ["-m", *JOBLIB, "seed=0,1", *RUN]
    p = start([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    pids: set[int] = set()
    wait_until_training(p, sweep, 2, pids)
    pids |= descendants(p.pid)
    p.kill()
    p.wait()
    assert pids, "no worker processes were seen"
    assert_nothing_left(pids, 20, "the sweep's workers (or loky's resource tracker) outlived their parent")
    p.stderr.close()
    p.stdout.close()
    interrupted = assert_saved(sweep, "SIGTERM", 2)
    assert len(interrupted) == 2, "a worker did not save its run"
    # resumable: the claim the killed parent left on the sweep dir is free to take (resume=true does)
    claim(sweep, create=False, option="hydra.sweep.dir").release()
