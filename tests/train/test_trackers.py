"""logger=: TensorBoard (with hparams and final metrics), metrics.csv, a local MLflow file store and
an offline wandb run, several at once, each read back as its own reader would; a resume shows no
step twice in any of them, and may switch trackers."""
from __future__ import annotations

import csv
import importlib.util
import json
import logging
import socket
import struct
from pathlib import Path

import pytest
import torch
from helpers import TINY, train_cfg

from genexp.train import loop as trainer
from genexp.train.checkpoint import run_id
from genexp.train.trackers import Tracker, Trackers, scalars_of

pytestmark = pytest.mark.e2e  # whole runs or processes: not in the fast subset (README)

HAS = {m: importlib.util.find_spec(m) is not None for m in ("mlflow", "wandb")}
LOGGERS = ["tensorboard", "csv", *(m for m in ("mlflow", "wandb") if HAS[m])]
RUN = [*TINY, "device=cpu", "labels=30", "batch_size=16", "unlabeled_batch_size=32", "log_every=3",
       "checkpoint_every=4"]
STEPS = [3, 6, 9, 10, 12, 15, 18, 20]  # log_every=3 lines and the evaluations at 10 and 20


@pytest.fixture(autouse=True)
def threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class CrashAfter:
    """A crash once step `step` is logged (the trainer reads `signum` once while setting up, then
    after each step): its checkpoint is older, so a resume runs the logged steps after it again."""

    def __init__(self, step: int) -> None:
        self.reads, self.step = 0, step

    @property
    def signum(self) -> None:
        self.reads += 1
        if self.reads > self.step:
            raise RuntimeError("killed")
        return None


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A run with every installed tracker that crashed after step 9 (checkpoint at 8), resumed to
    the end; no connection left this machine meanwhile (wandb's own process aside: it is offline)."""
    root = tmp_path_factory.mktemp("trackers")
    run, store = root / "run", root / "mlruns"
    store_key = [f"logger.mlflow.tracking_uri={store}"] if HAS["mlflow"] else []
    cfg = train_cfg("method=vat", *RUN, f"logger=[{','.join(LOGGERS)}]", *store_key)
    outside, connect = [], socket.socket.connect

    def local_only(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not str(address[0]).startswith(("127.", "::1")):
            outside.append(address)
            raise OSError("tests never reach the network")
        connect(sock, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", local_only)
        with pytest.raises(RuntimeError, match="killed"):
            trainer.train(cfg, run, stop=CrashAfter(9))
        assert [r["step"] for r in records(run)] == [3, 6, 9]
        result = trainer.train(cfg, run, resume_from=run / "checkpoint.pt")
    assert [r["step"] for r in records(run)] == STEPS
    assert outside == []
    return run, store, result


def expected(run: Path, key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in records(run) if r.get(key) is not None]


def assert_same(got: list[tuple[int, float]], want: list[tuple[int, float]], rel: float) -> None:
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=rel)


def test_tensorboard_holds_each_step_once_and_the_hparams_with_final_metrics(resumed):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run, _, result = resumed
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    for key in ("train_loss", "train_vat", "lr"):
        assert_same([(e.step, e.value) for e in acc.Scalars(key)], expected(run, key), rel=1e-6)
    assert [e.step for e in acc.Scalars("test_acc")] == [10, 20]
    assert [(e.step, e.value) for e in acc.Scalars("result/test_acc")] == [(20, pytest.approx(result["test_acc"]))]
    assert acc.Scalars("result/best_step")[0].value == result["best_step"]

    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = {k: v.number_value if v.WhichOneof("kind") == "number_value" else v.string_value
          for k, v in start.hparams.items()}
    assert hp["method.name"] == "vat" and hp["labels"] == 30 and hp["optim.lr"] == pytest.approx(1e-3)
    assert hp["model.widths"] == "[16]"
    # how the run ran is not what it is: neither the trackers nor the device are hyperparameters
    assert not any(k.startswith(("logger", "device", "log_every", "hydra")) for k in hp)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"result/test_acc", "result/val_acc", "result/test_acc_final", "result/train_vat_final"} <= metrics


def test_metrics_csv_has_a_row_per_metrics_jsonl_line(resumed):
    run, _, _ = resumed
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == STEPS
    for row, line in zip(rows, records(run)):
        shown = {k: float(v) for k, v in row.items() if k != "step" and v != ""}
        assert shown == pytest.approx(scalars_of(line), rel=1e-12)
    assert rows[0]["test_acc"] == "" and float(rows[3]["test_acc"]) == pytest.approx(records(run)[3]["test_acc"])


@pytest.mark.skipif(not HAS["mlflow"], reason="pip install 'genexp[mlflow]'")
def test_the_mlflow_file_store_holds_one_run_with_the_whole_history(resumed):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    run, store, result = resumed
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("genexp")
    everything = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    active = [r for r in everything if r.info.lifecycle_stage == "active"]
    assert len(everything) == 2 and len(active) == 1  # the crashed session's run was replaced
    [mine] = active
    assert mine.info.status == "FINISHED" and mine.info.run_name == run.name
    assert mine.data.tags["genexp_run_dir"] == str(run.resolve())
    history = client.get_metric_history(mine.info.run_id, "train_loss")
    assert_same(sorted((m.step, m.value) for m in history), expected(run, "train_loss"), rel=1e-12)
    assert mine.data.metrics["result/test_acc"] == pytest.approx(result["test_acc"])
    assert mine.data.params["method.name"] == "vat" and mine.data.params["labels"] == "30"
    assert not any(k.startswith(("logger", "device")) for k in mine.data.params)
    [lost] = [r for r in everything if r.info.lifecycle_stage == "deleted"]
    assert lost.info.status == "FAILED"


def wandb_records(path: Path) -> list:
    """The records of an offline .wandb file: LevelDB's log format (32 KiB blocks of chunks with a
    7-byte header: CRC, length, type) after a 7-byte W&B header; each record a protobuf."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, chunks, out = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and n == 0:
            break
        chunks, pos = chunks + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # a record's whole (FULL) or last chunk
            out.append(pb.Record.FromString(chunks))
            chunks = b""
    return out


@pytest.mark.skipif(not HAS["wandb"], reason="pip install 'genexp[wandb]'")
def test_the_offline_wandb_run_holds_the_whole_history_under_the_run_id(resumed):
    run, _, result = resumed
    sessions = sorted((run / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and len({p.name.rsplit("-", 1)[1] for p in sessions}) == 1  # one run id
    latest = (run / "wandb" / "latest-run").resolve()
    assert latest == sessions[-1].resolve()
    got = wandb_records(next(latest.glob("run-*.wandb")))
    history = {}
    for r in got:
        if r.WhichOneof("record_type") == "history":
            items = {i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in r.history.item}
            history[r.history.step.num] = items
    assert sorted(history) == STEPS
    assert_same([(s, history[s]["train_loss"]) for s in STEPS], expected(run, "train_loss"), rel=1e-12)
    summary = {i.key: json.loads(i.value_json) for r in got if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update if i.key}
    assert summary["result/test_acc"] == pytest.approx(result["test_acc"])
    config = {i.key: json.loads(i.value_json) for r in got if r.WhichOneof("record_type") == "run"
              for i in r.run.config.update}
    assert config["method"]["name"] == "vat" and "logger" not in config and "device" not in config
    assert [r.exit.exit_code for r in got if r.WhichOneof("record_type") == "exit"] == [0]


def test_the_logger_is_not_the_run_and_several_compose(tmp_path):
    one, two = train_cfg(*RUN), train_cfg(*RUN, "logger=[tensorboard,csv,mlflow,wandb]")
    assert list(one.logger) == ["tensorboard"] and list(two.logger) == ["tensorboard", "csv", "mlflow", "wandb"]
    assert two.logger.wandb.mode == "offline"
    assert "logger" not in train_cfg(*RUN, "logger=[]")
    assert run_id(one) == run_id(two) == run_id(train_cfg(*RUN, "logger=[]"))


def test_a_resume_may_add_trackers_which_get_the_history(tmp_path, in_process):
    """A run watched by nothing, crashed after step 9, resumed by `genexp train resume=` with csv
    (and mlflow, in its default store under ./outputs): each holds every step once."""
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="killed"):
        trainer.train(train_cfg("method=vat", *RUN, "logger=[]"), run, stop=CrashAfter(9))
    assert not (run / "tb").exists() and not (run / "metrics.csv").exists()
    chosen = ["csv", *(["mlflow"] if HAS["mlflow"] else [])]
    assert in_process("resume=true", f"logger=[{','.join(chosen)}]", f"hydra.run.dir={run}") == 0
    assert [int(r["step"]) for r in csv.DictReader((run / "metrics.csv").open())] == STEPS
    assert not (run / "tb").exists()
    if HAS["mlflow"]:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=(tmp_path / "outputs" / "mlruns").as_uri())
        [mine] = client.search_runs([client.get_experiment_by_name("genexp").experiment_id])
        assert sorted(m.step for m in client.get_metric_history(mine.info.run_id, "train_loss")) == STEPS


def test_a_missing_tracker_package_is_refused_before_anything_is_written(tmp_path, in_process, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    run = tmp_path / "run"
    assert in_process(*RUN, "logger=[tensorboard,mlflow]", f"hydra.run.dir={run}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: logger=mlflow needs mlflow: pip install 'genexp[mlflow]'"]
    assert not (run / "result.json").exists() and not (run / "tb").exists()


def test_a_tracker_that_fails_at_the_end_costs_a_warning_not_the_run(caplog):
    class Broken(Tracker):
        name = "broken"

        def log_hparams(self, hparams, final, step):
            raise OSError("No space left on device")

        def close(self, status):
            self.status = status
            raise OSError("No space left on device")

    broken = Broken()
    with caplog.at_level(logging.WARNING, logger="genexp"):
        Trackers([broken], {"labels": 30}).finish({"steps": 20, "test_acc": 0.5})
    assert broken.status == "completed"
    assert [r.getMessage() for r in caplog.records] == [
        "logger=broken could not record the hyperparameters and final metrics: OSError: No space left on device",
        "logger=broken did not close cleanly: OSError: No space left on device"]
