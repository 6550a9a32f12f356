"""result.json through one schema (genexp.runs.record.RunRecord): a fresh run's record reads back
exactly as written, records of earlier versions read, and tables never change a record."""
import copy
import json
from pathlib import Path

import pytest
from helpers import genexp

from genexp.runs.record import RunRecord, Status, read_record
from genexp.tables.cells import load_results, parse_metric, summarise
from genexp.tables.compare import Baseline, compare
from genexp.tables.copies import drop_copies
from genexp.tables.table import main as table_main

TINY = ["labels=50", "steps=4", "eval_every=2", "checkpoint_every=2", "progress=false", "cpu_threads=1"]
VERSIONS = {"python": "3.10.12", "torch": "2.1.0", "numpy": "1.26.0"}

# Records as earlier versions of the trainer wrote them (from `git log -p` of genexp/trainer.py and
# genexp/train/loop.py): what each lacks is a key added since.
V1_COMPLETED = {  # 8297c6b: no world_size, tag, split_seed_drawn, data_fingerprint, selection, train_*_final
    "status": "completed", "dataset": "digits", "model": "mlp", "method": "vat", "labels": 50, "seed": 1,
    "split_seed": 0, "steps": 300, "experiment": None, "device": "cpu", "git_commit": "8297c6b", "versions": VERSIONS,
    "run_dir": "outputs/a", "val_acc": 0.81, "test_acc": 0.8, "best_step": 300, "val_acc_final": 0.81,
    "test_acc_final": 0.8, "train_acc_final": 0.99, "n_labeled": 50, "n_unlabeled": 1100, "n_val": 126,
    "n_test": 539, "n_params": 85002, "wall_time_s": 12.5, "train_time_s": 9.1, "step_time_ms": 30.3,
    "step_time_ms_median": 29.0}
V1_FAILED = {  # 8297c6b: a Ctrl-C or bad input was recorded as failed, with no step
    "status": "failed", "dataset": "digits", "model": "mlp", "method": "none", "labels": 50, "seed": 0,
    "split_seed": 0, "steps": 300, "experiment": "none_vs_vat", "device": "cpu", "git_commit": None,
    "versions": VERSIONS, "run_dir": "outputs/b", "reason": "interrupted or bad input", "wall_time_s": 3.0}
V2_INTERRUPTED = {  # 22109c1: interrupted by a signal, with world_size; no tag, data_fingerprint yet
    "status": "interrupted", "dataset": "digits", "model": "mlp", "method": "vat", "labels": 50, "seed": 2,
    "split_seed": 0, "steps": 300, "experiment": None, "device": "cpu", "world_size": 1, "git_commit": "22109c1",
    "versions": VERSIONS, "run_dir": "outputs/c", "step": 120, "signal": "SIGTERM", "checkpoint_step": 120,
    "reason": "SIGTERM at step 120 of 300: checkpoint saved, resume continues from it", "wall_time_s": 5.0}
V3_COMPLETED_NO_VAL = {  # 5da1824 + 7b1481f: selection and train_*_final; step_time_ms_median may be null
    **V1_COMPLETED, "world_size": 1, "tag": None, "seed": 3, "selection": "final (dataset.val_size=0: no validation set)",
    "val_acc": None, "val_acc_final": None, "n_val": 0, "train_sup_final": 0.1, "train_vat_final": 0.02,
    "train_loss_final": 0.12, "step_time_ms_median": None, "a_key_of_another_version": [1, 2]}
OLD = [V1_COMPLETED, V1_FAILED, V2_INTERRUPTED, V3_COMPLETED_NO_VAL]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    p = genexp("train", *TINY, "method=vat", f"hydra.run.dir={root / 'run'}", cwd=root)
    assert p.returncode == 0, p.stderr
    return root / "run"


def test_a_fresh_runs_record_reads_back_exactly(fresh):
    data = json.loads((fresh / "result.json").read_text())
    record = RunRecord.from_json(data)
    assert record.to_json() == data and dict(record) == data
    assert record.status == Status.COMPLETED and record.identity.method == "vat" and record.identity.labels == 50
    assert record.metrics.test_acc == data["test_acc"] and record.timings.wall_time_s == data["wall_time_s"]
    assert set(record.metrics.terms_final) == {"train_loss_final", "train_sup_final", "train_vat_final"}
    assert record.environment.versions == data["versions"] and record.extra == {}
    assert read_record(fresh) == record


@pytest.mark.parametrize("data", OLD, ids=["v1_completed", "v1_failed", "v2_interrupted", "v3_no_val"])
def test_records_of_earlier_versions_read(data):
    record = RunRecord.from_json(data)
    assert record.to_json() == data  # no key added (not even as null), none lost
    assert record.status == data["status"] and record.identity.seed == data["seed"]
    assert record.identity.data_fingerprint is None and "data_fingerprint" not in record
    assert record.get("tag", "absent") == data.get("tag", "absent")


def test_an_old_record_keeps_keys_no_group_models_and_tells_null_from_absent():
    record = RunRecord.from_json(V3_COMPLETED_NO_VAL)
    assert record.extra == {"a_key_of_another_version": [1, 2]}
    assert record.metrics.val_acc is None and "val_acc" in record  # recorded as null
    assert record.identity.split_seed_drawn is None and "split_seed_drawn" not in record  # never recorded


def test_the_writer_cannot_write_a_key_outside_the_schema():
    with pytest.raises(TypeError, match="test_accuracy"):
        RunRecord().with_values(status=Status.COMPLETED, test_accuracy=0.9)


def old_runs(root: Path) -> Path:
    for i, data in enumerate(OLD):
        d = root / f"r{i}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(data))
        (d / "config.yaml").write_text(f"seed: {data['seed']}\nlabels: 50\nmethod:\n  name: {data['method']}\n")
    (root / "broken").mkdir()
    (root / "broken" / "result.json").write_text("{not json")
    return root


def test_tables_never_change_a_record(tmp_path, capsys):
    runs = load_results([old_runs(tmp_path / "runs")])
    before = [copy.deepcopy(r.record.to_json()) if r.readable else None for r in runs]
    kept, _ = drop_copies(runs)
    summarise(kept, ["method"], "test_acc")
    compare(kept, ["seed"], parse_metric("test_acc"), Baseline.parse("seed=1"), 0.95)
    assert [r.record.to_json() if r.readable else None for r in runs] == before
    for r, data in zip([r for r in runs if r.readable], OLD):
        assert dict(r.record) == data  # the table's path and config live beside it
    assert table_main([str(tmp_path / "runs"), "--layout", "flat"]) == 0
    out = capsys.readouterr()
    assert "unreadable result.json in" in out.err
    for i, data in enumerate(OLD):
        assert json.loads((tmp_path / "runs" / f"r{i}" / "result.json").read_text()) == data
