"""Trackers: where a run's scalars are watched, besides metrics.jsonl (the record each of them mirrors).

`logger=` picks them (genexp/configs/logger/): tensorboard (the default), csv, mlflow, wandb; several
with `logger=[tensorboard,mlflow]`, none with `logger=[]`. Each gets what TensorBoard always got:
every metrics.jsonl line's numbers at its step, and at the end of a completed run the run's
hyperparameters (its config without the keys that say how it ran) with its final metrics
(`result/<key>` of result.json). Which trackers watch a run is not what the run computes: `logger`
stays out of the run's identity, and a resume takes it from the command.

A resumed run repeats the steps after its checkpoint, and no tracker shows a step twice:
tensorboard purges its events after the checkpoint's step; csv rebuilds metrics.csv from
metrics.jsonl; mlflow replaces the run dir's earlier MLflow run (deleted, which `mlflow gc`
makes final) by a new one; wandb writes a new offline run under the same run id. Those three, and
a tensorboard that joins at the resume, start with metrics.jsonl's history up to the checkpoint.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from genexp.errors import GenexpError, check_choice
from genexp.runs.files import atomic_write_text
from genexp.runs.record import Status
from genexp.train.checkpoint import NOT_IDENTITY

log = logging.getLogger("genexp")

# Each tracker and the optional module it needs (its extra in pyproject.toml has the same name).
LOGGERS: dict[str, str | None] = {"tensorboard": None, "csv": None, "mlflow": "mlflow", "wandb": "wandb"}
# result.json's numbers that a run ends with (with its train_*_final terms): the hparams' metrics.
FINAL = ("val_acc", "test_acc", "best_step", "val_acc_final", "test_acc_final", "train_acc_final", "wall_time_s",
         "step_time_ms")


def chosen(cfg: DictConfig) -> list[str]:
    """The trackers `cfg` asks for, checked before anything is written: an unknown one, or one whose
    optional package is missing, is refused in one line."""
    node = cfg.get("logger") or {}
    for name in node:
        if name not in LOGGERS:
            raise GenexpError(f"logger={name} is unknown: choose among {', '.join(LOGGERS)} "
                              f"(several: logger=[tensorboard,mlflow]; none: logger=[])")
        module = LOGGERS[name]
        if module is not None and importlib.util.find_spec(module) is None:
            raise GenexpError(f"logger={name} needs {module}: pip install 'genexp[{name}]'")
    if "wandb" in node:
        check_choice("mode", node.wandb.mode, ("offline", "online"), group="logger.wandb")
    return list(node)


def scalars_of(record: Mapping[str, Any]) -> dict[str, float]:
    """What a metrics.jsonl line shows a tracker: its numbers but the step; elapsed_s only on an
    evaluation's line (as TensorBoard always had it)."""
    evaluation = "test_acc" in record
    return {k: float(v) for k, v in record.items()
            if k != "step" and v is not None and (evaluation or k != "elapsed_s")}


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the keys that say how the run ran (checkpoint.NOT_IDENTITY,
    logger among them): what the run is."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in plain.items() if k not in NOT_IDENTITY}


def hparams_of(config: Mapping[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """`config` flattened to dotted keys; lists and nulls as JSON text, which every tracker takes."""
    flat: dict[str, int | float | str | bool] = {}
    for k, v in config.items():
        if k == "cache_dir":  # where a cache lives, at any depth: not what the run is
            continue
        if isinstance(v, Mapping):
            flat |= hparams_of(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
    return flat


def final_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    return {f"result/{k}": float(v) for k, v in result.items()
            if (k in FINAL or (k.startswith("train_") and k.endswith("_final")))
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker:
    """One place a run is watched from (rank 0 only)."""

    name = ""
    wants_history = True  # a new session starts with metrics.jsonl's lines up to the checkpoint

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        raise NotImplementedError

    def log_history(self, records: Iterable[Mapping[str, Any]]) -> None:
        for r in records:
            self.log_scalars(r["step"], scalars_of(r))

    def log_hparams(self, hparams: Mapping[str, Any], final: Mapping[str, float], step: int) -> None:
        """The run's hyperparameters with its final metrics (a completed run)."""

    def close(self, status: str) -> None:
        """`status`: result.json's (completed, failed, interrupted)."""


class Trackers:
    """The run's trackers, fed together."""

    def __init__(self, trackers: Iterable[Tracker] = (), hparams: Mapping[str, Any] | None = None) -> None:
        self.trackers, self.hparams = list(trackers), dict(hparams or {})

    def log(self, record: Mapping[str, Any]) -> None:
        """A metrics.jsonl line, as it is appended."""
        scalars = scalars_of(record)
        for t in self.trackers:
            t.log_scalars(record["step"], scalars)

    def finish(self, result: Mapping[str, Any]) -> None:
        """A completed run: its hyperparameters and final metrics, then each tracker closed. A
        tracker that fails here costs a warning, not the completed run (result.json has them)."""
        final = final_metrics(result)
        for t in self.trackers:
            try:
                t.log_hparams(self.hparams, final, result["steps"])
            except Exception as e:
                _warn(t, "could not record the hyperparameters and final metrics", e)
        self.close(Status.COMPLETED)

    def close(self, status: str) -> None:
        """Once, whatever the outcome; a tracker that fails to close costs a warning, not the run
        (metrics.jsonl holds all it showed)."""
        trackers, self.trackers = self.trackers, []
        for t in trackers:
            try:
                t.close(status)
            except Exception as e:
                _warn(t, "did not close cleanly", e)


def _warn(t: Tracker, what: str, e: Exception) -> None:
    log.warning("logger=%s %s: %s", t.name, what, (f"{type(e).__name__}: {e}".splitlines() or [""])[0][:300])


def open_trackers(cfg: DictConfig, run_dir: Path, resumed_at: int | None, history: list[dict]) -> Trackers:
    """The trackers `cfg` chooses, opened on `run_dir`; `resumed_at`: the checkpoint's step of a
    resumed run, whose metrics.jsonl lines up to it are `history`."""
    names = chosen(cfg)
    config = run_config(cfg)
    opened = Trackers(hparams=hparams_of(config))
    try:
        for name in names:
            opts = cfg.logger[name]
            if name == "tensorboard":
                t: Tracker = TensorBoard(run_dir, resumed_at)
            elif name == "csv":
                t = Csv(run_dir)
            elif name == "mlflow":
                t = MLflow(opts, run_dir, opened.hparams)
            else:
                t = Wandb(opts, run_dir, config)
            opened.trackers.append(t)
            if t.wants_history:
                t.log_history(history)
    except BaseException:
        opened.close(Status.FAILED)
        raise
    return opened


class TensorBoard(Tracker):
    """Events in <run dir>/tb; the hyperparameters and final metrics in the same dir (the HPARAMS tab)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, resumed_at: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        tb = run_dir / "tb"
        self.wants_history = not any(tb.glob("events.out.tfevents.*"))  # a new run, or tensorboard joins at a resume
        # TensorBoard drops events at steps >= purge_step: the checkpoint's own step was logged and
        # kept in metrics.jsonl, so only the steps after it go.
        self.writer = SummaryWriter(log_dir=str(tb), purge_step=None if resumed_at is None else resumed_at + 1)

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def log_hparams(self, hparams: Mapping[str, Any], final: Mapping[str, float], step: int) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        # SummaryWriter.add_hparams would write them to a new subdir, a run of its own: the same
        # summaries, in the run's own events instead.
        for summary in hparams_summary(dict(hparams), dict(final)):
            self.writer.file_writer.add_summary(summary, step)
        for k, v in final.items():
            self.writer.add_scalar(k, v, step)

    def close(self, status: str) -> None:
        self.writer.close()


class Csv(Tracker):
    """<run dir>/metrics.csv: a step column, then a column per scalar (a row leaves blank what its
    line lacks: accuracies between evaluations)."""

    name = "csv"

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.csv"
        self.columns: list[str] = ["step"]
        atomic_write_text(self.path, "")  # rebuilt from metrics.jsonl's history: nothing of a lost session stays

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        row = {"step": step, **scalars}
        new = [k for k in row if k not in self.columns]
        if new:  # a wider header: the file again, whole (rare: the first lines of each kind)
            rows = list(csv.DictReader(io.StringIO(self.path.read_text()))) if self.path.stat().st_size else []
            self.columns += new
            atomic_write_text(self.path, self._render([*rows, row], header=True))
        else:
            with self.path.open("a", newline="") as f:
                f.write(self._render([row], header=False))

    def _render(self, rows: list[Mapping[str, Any]], header: bool) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        if header:
            w.writeheader()
        w.writerows(rows)
        return buf.getvalue()


def tracking_uri(value: str) -> str:
    """A directory (a local file store) as a file: URI; any other MLflow URI as it is."""
    if "://" in value or value.startswith("file:"):
        return value
    return Path(value).expanduser().resolve().as_uri()


class MLflow(Tracker):
    """One MLflow run per run dir, in a local file store by default (no server, no network)."""

    name = "mlflow"

    def __init__(self, opts: DictConfig, run_dir: Path, hparams: Mapping[str, Any]) -> None:
        uri = tracking_uri(str(opts.tracking_uri))
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store in maintenance mode behind this switch; it still reads
            # and writes as before, and needs neither a database nor a server.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow 3 reports usage over the network
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        experiment = self._experiment(str(opts.experiment_name), uri)
        where = str(run_dir.resolve())
        key = hashlib.sha256(where.encode()).hexdigest()[:16]
        # A run dir's earlier MLflow run (a session before a resume or restart) holds steps this
        # session repeats: the new run replaces it, with the whole history.
        for earlier in self.client.search_runs([experiment], filter_string=f"tags.genexp_run = '{key}'"):
            self.client.delete_run(earlier.info.run_id)
        run = self.client.create_run(experiment, run_name=run_dir.name,
                                     tags={"genexp_run": key, "genexp_run_dir": where})
        self.run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in hparams.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        log.info("mlflow: run %s in %s", self.run_id, uri)

    def _experiment(self, name: str, uri: str) -> str:
        lock: Any = nullcontext()
        if uri.startswith("file:"):  # jobs of a parallel sweep: one of them creates the experiment
            from filelock import FileLock

            store = Path(urlparse(uri).path)
            store.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(store / ".genexp.lock"))
        with lock:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                return self.client.create_experiment(name)
        if found.lifecycle_stage == "deleted":
            raise GenexpError(f"the MLflow experiment {name!r} in {uri} is deleted: restore it (mlflow experiments "
                              f"restore) or choose another logger.mlflow.experiment_name")
        return found.experiment_id

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self._log([(step, scalars)])

    def log_history(self, records: Iterable[Mapping[str, Any]]) -> None:
        self._log([(r["step"], scalars_of(r)) for r in records])

    def _log(self, steps: list[tuple[int, Mapping[str, float]]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for step, scalars in steps for k, v in scalars.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log_hparams(self, hparams: Mapping[str, Any], final: Mapping[str, float], step: int) -> None:
        self._log([(step, final)])  # the params went in when the run opened: a running run has them too

    def close(self, status: str) -> None:
        state = {Status.COMPLETED: "FINISHED", Status.INTERRUPTED: "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, state)


OFFLINE_RUN = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(.+)$")


class Wandb(Tracker):
    """Weights & Biases, offline by default: <run dir>/wandb/offline-run-*, synced when you choose
    (`wandb sync <run dir>/wandb/latest-run`: each session's offline run holds the whole history)."""

    name = "wandb"

    def __init__(self, opts: DictConfig, run_dir: Path, config: Mapping[str, Any]) -> None:
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # wandb reports its own crashes over the network
        import wandb

        earlier = sorted(p.name for p in (run_dir / "wandb").glob("*run-*") if OFFLINE_RUN.match(p.name))
        run_id = OFFLINE_RUN.match(earlier[-1]).group(1) if earlier else None  # a resume keeps the run's id
        tags = list(opts.tags or [])
        self.run = wandb.init(
            mode=opts.mode, dir=str(run_dir), project=opts.project, entity=opts.entity, group=opts.group,
            tags=tags or None, name=run_dir.name, id=run_id, config=dict(config), reinit="finish_previous",
            # no console capture (genexp's own log and bar stay as they are), no system-metrics sampler
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        log.info("wandb: %s run %s in %s", opts.mode, self.run.id, self.run.dir)

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def log_hparams(self, hparams: Mapping[str, Any], final: Mapping[str, float], step: int) -> None:
        self.run.summary.update(dict(final))  # the config went in when the run opened

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == Status.COMPLETED else 1)
