"""The engine end to end through the CLI, on real MNIST with the smoke budget."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.runner import device_slots
from bench.store import BASELINE_COLUMNS, COLUMNS, SPEED_COLUMNS, ResultsStore
from cells import CELLS, register_cell
from cells.lstm import LSTMFused

runner = CliRunner()


class NaNLSTM(LSTMFused):
    """A cell whose outputs are NaN: its runs must fail and be recorded as failed."""

    def _run(self, x, state, lengths):
        output, state = super()._run(x, state, lengths)
        return output * float("nan"), tuple(s * float("nan") for s in state)


def invoke(*args, env=None):
    result = runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})
    return result


@pytest.fixture(scope="module")
def smoke_out(shared_data, tmp_path_factory):
    """One matrix: 2 cells x 2 seeds, plus a cell that fails; shared by the tests below."""
    out = tmp_path_factory.mktemp("smoke")
    register_cell("nan_lstm_for_tests", NaNLSTM, "test-only: an LSTM whose outputs are NaN")
    try:
        result = invoke("run", "--task", "mnist-row", "--cell", "gru_fused", "--cell", "nan_lstm_for_tests",
                        "--cell", "lstm_handwritten", "--seed", "0", "--seed", "1", "--budget", "smoke",
                        "--out", str(out), "--data-dir", str(shared_data), "--no-download")
    finally:
        CELLS.remove("nan_lstm_for_tests")
    return out, result


def test_matrix_stores_one_row_per_run_and_goes_on_after_failures(smoke_out):
    out, result = smoke_out
    assert result.exit_code == 1, result.output  # failed runs make the exit status non-zero
    assert "6 runs" in result.output and "4 ok, 2 failed" in result.output
    rows = ResultsStore(out).rows()
    assert len(rows) == 6
    by_status = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row)
    assert {(r["cell"], r["seed"]) for r in by_status["ok"]} == {
        ("gru_fused", 0), ("gru_fused", 1), ("lstm_handwritten", 0), ("lstm_handwritten", 1)}
    for row in by_status["failed"]:
        assert row["cell"] == "nan_lstm_for_tests"
        assert row["error"].startswith("FloatingPointError: training loss is not finite (nan or inf) in steps 1-8")
        assert row["metric_value"] is None
    for row in by_status["ok"]:
        assert row["metric_name"] == "accuracy" and 0 <= row["metric_value"] <= 1
        assert row["test_samples"] == 128  # smoke: 2 test batches of 64
        assert row["steps"] == 8 and row["epochs"] == 1
        assert row["step_ms_median"] > 0 and row["samples_per_s"] > 0
        assert row["saved_bytes"] > 0 and row["params_bytes"] == 4 * row["parameters"]
        assert row["peak_memory_bytes"] == row["saved_bytes"] + row["params_bytes"] + row["optimizer_bytes"]
        # AdamW: two moments per weight, and a float32 step count per tensor (4 cell + 2 head tensors)
        assert row["optimizer_bytes"] == 2 * row["params_bytes"] + 4 * 6
        assert row["environment"]["torch"] == torch.__version__
        assert row["config"]["budget_config"]["train_batches"] == 8
        assert row["device"].startswith("cpu: ")
    # the two seeds of one cell differ: seeds reach the run
    gru = [r["metric_value"] for r in by_status["ok"] if r["cell"] == "gru_fused"]
    losses = [r["metrics"]["loss"] for r in by_status["ok"] if r["cell"] == "gru_fused"]
    assert losses[0] != losses[1], gru


def test_schema_is_the_documented_one(smoke_out):
    out, _ = smoke_out
    with sqlite3.connect(out / "results.sqlite") as db:
        names = [r[1] for r in db.execute("PRAGMA table_info(runs)")]
    assert names == list(COLUMNS)


def test_a_store_from_an_older_rnnbench_gains_the_new_columns(tmp_path):
    older = {name: kind for name, kind in SPEED_COLUMNS.items() if not name.startswith("floor_")}
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        db.execute(f"CREATE TABLE speed ({', '.join(f'{n} {k}' for n, k in older.items())})")
        db.execute("INSERT INTO speed (measurement_id, session, status, cell, shape) VALUES ('a', 's', 'ok', 'x', 'y')")
    store = ResultsStore(tmp_path)
    store.save({"measurement_id": "b", "session": "s", "status": "ok", "cell": "x", "shape": "y",
                "floor_forward_ms": 1.5}, table="speed")
    rows = {r["measurement_id"]: r for r in store.rows("speed")}
    assert rows["a"]["floor_forward_ms"] is None and rows["b"]["floor_forward_ms"] == 1.5
    ResultsStore(tmp_path)  # opening it again changes nothing


def test_rerun_skips_done_runs_and_retries_failed(smoke_out, shared_data):
    out, _ = smoke_out
    before = {r["run_id"]: r["finished_at"] for r in ResultsStore(out).rows() if r["status"] == "ok"}
    result = invoke("run", "--task", "mnist-row", "--cell", "gru_fused", "--seed", "0", "--seed", "1",
                    "--budget", "smoke", "--out", str(out), "--data-dir", str(shared_data))
    assert result.exit_code == 0, result.output
    assert result.output.count("already done, skipped") == 2 and "2 already done" in result.output
    after = {r["run_id"]: r["finished_at"] for r in ResultsStore(out).rows() if r["status"] == "ok"}
    assert after == before


def test_report_renders_every_cell_with_spread(smoke_out):
    out, _ = smoke_out
    (out / "report.md").unlink()
    result = invoke("report", "--out", str(out))
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "## mnist-row" in text and "test accuracy (%), mean ± 95 % CI" in text and "| s to val 90 |" in text
    assert "Budgets: smoke: 8 training batches: checks the path, not accuracy." in text
    for cell in ("gru_fused", "lstm_handwritten"):
        line = next(line for line in text.splitlines() if line.startswith(f"| {cell} "))
        assert " ± " in line and "| 2 | 128 |" in line  # two seeds, 128 test samples
        assert line.count("| 1x16 smoke |") == 1  # one configuration: nothing tells it apart
    assert "## Failed and skipped runs" in text and "FloatingPointError" in text
    assert "## Environment" in text and "cpu: " in text
    (baseline,) = ResultsStore(out).rows("baselines")  # scored once for the four runs of one configuration
    line = next(line for line in text.splitlines() if line.startswith("| baseline: majority class "))
    assert f"| {100 * baseline['metric_value']:.2f} |" in line and "| 128 |" in line
    body = text.split("## mnist-row")[1].split("\n\n")[1].splitlines()  # the task's table
    assert body[-1] == line, "the baseline sits under the ranked rows"
    curves = [r["curve"] for r in ResultsStore(out).rows() if r["status"] == "ok"]
    assert all(len(c) == 1 and c[0]["epoch"] == 1 and c[0]["seconds"] > 0 for c in curves)
    for name in ("report-mnist-row.png", "report-mnist-row-curves.png", "report-mnist-row-gradients.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name})" in text
    ok = [r for r in ResultsStore(out).rows() if r["status"] == "ok"]
    assert len({r["configuration_id"] for r in ok}) == 2  # two cells, two seeds each
    for r in ok:  # 28 row steps, at initialisation and after training, for 100 fixed test samples
        gradients = r["state_gradients"]
        assert len(gradients["init"]) == len(gradients["trained"]) == 28 and gradients["samples"] == 100
        assert all(v > 0 for v in gradients["init"]) and gradients["init"] != gradients["trained"]
    result = invoke("report", "--out", str(out), "--target", "mnist-row=1")
    assert result.exit_code == 0 and "| s to val 1 |" in (out / "report.md").read_text()
    result = invoke("export", "--out", str(out), "--format", "json")
    assert result.exit_code == 0, result.output
    grouped = json.loads((out / "export" / "runs-grouped.json").read_text())
    assert sorted(g["cell"] for g in grouped) == ["gru_fused", "lstm_handwritten"] and all(g["n"] == 2 for g in grouped)
    assert len(json.loads((out / "export" / "runs.json").read_text())) == 6  # the failed runs too


def test_cli_errors_name_the_input(tmp_path):
    result = invoke("run", "--task", "mnist-rwo", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown task 'mnist-rwo'. Did you mean 'mnist-row'" in result.output
    result = invoke("run", "--cell", "lstm", "--out", str(tmp_path))
    assert result.exit_code == 2 and "unknown cell 'lstm'" in result.output and "lstm_fused" in result.output
    result = invoke("run", "--devices", "0", "--out", str(tmp_path))
    assert result.exit_code == 2 and "devices must be a positive integer, got 0" in result.output
    result = invoke("run", "--dropout", "0.3", "--out", str(tmp_path))
    assert result.exit_code == 2 and "needs num_layers > 1" in result.output
    result = invoke("run", "--budget", "huge", "--out", str(tmp_path))
    assert result.exit_code == 2 and "huge" in result.output
    result = invoke("run", "--task", "adding", "-o", "length=1", "--out", str(tmp_path))
    assert result.exit_code == 2 and "length=1" in result.output and "at least 2" in result.output
    result = invoke("report", "--out", str(tmp_path / "nothing"))
    assert result.exit_code == 2 and "nothing: does not exist" in result.output
    result = invoke("report", "--out", str(tmp_path), "--target", "mnist-row")
    assert result.exit_code == 2 and "--target must be TASK=VALUE" in result.output
    result = invoke("report", "--out", str(tmp_path), "--target", "mnist-rwo=97")
    assert result.exit_code == 2 and "unknown task 'mnist-rwo'" in result.output
    result = invoke("report", "--out", str(tmp_path), "--target", "mnist-row=high")
    assert result.exit_code == 2 and "'high' is not a number" in result.output
    result = invoke("export", "--out", str(tmp_path), "--format", "xlsx")
    assert result.exit_code == 2 and "xlsx" in result.output
    result = invoke("export", "--out", str(tmp_path / "nothing"))
    assert result.exit_code == 2 and "nothing: does not exist" in result.output
    result = invoke("run", "--task", "translation-de-en-attention", "-o", "score=dot", "--out", str(tmp_path))
    assert result.exit_code == 2 and "score='dot'" in result.output and "general, additive" in result.output
    ResultsStore(tmp_path / "store")
    (tmp_path / "file").write_text("")
    result = invoke("export", "--out", str(tmp_path / "store"), "--to", str(tmp_path / "file"))
    assert result.exit_code == 2 and "exists and is not a folder" in result.output
    assert not (tmp_path / "results.sqlite").exists()


def test_missing_data_is_a_recorded_failure_with_the_file_named(tmp_path):
    result = invoke("run", "--budget", "smoke", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "nowhere"),
                    "--no-download")
    assert result.exit_code == 2 and "is not a folder" in result.output
    (tmp_path / "empty").mkdir()
    result = invoke("run", "--cell", "rnn_fused", "--budget", "smoke", "--out", str(tmp_path / "out"),
                    "--data-dir", str(tmp_path / "empty"), "--no-download")
    assert result.exit_code == 1
    (row,) = ResultsStore(tmp_path / "out").rows()
    assert row["status"] == "failed" and "DataError: MNIST file train-images-idx3-ubyte not found" in row["error"]


def test_two_devices_train_one_run_with_ddp(shared_data, tmp_path):
    result = invoke("run", "--task", "mnist-row", "--cell", "gru_handwritten", "--budget", "smoke", "--devices", "2",
                    "--out", str(tmp_path), "--data-dir", str(shared_data))
    assert result.exit_code == 0, result.output
    (row,) = ResultsStore(tmp_path).rows()
    assert row["status"] == "ok" and row["devices"] == 2
    assert row["test_samples"] == 256  # 2 test batches on each of 2 processes
    assert row["samples_per_s"] > 0 and row["steps"] == 8


def closed_wandb_files() -> None:
    """Stop W&B's service process, which closes every run's `.wandb` file.

    The service writes a run's records through a buffer; reading the file while the process that
    logged them (here the test process, which invoked the CLI in-process) lives on once found the
    leaderboard's records missing in CI. The CLI run as a command ends its process, which stops
    the service too."""
    import wandb

    wandb.teardown()


def test_wandb_offline_logs_runs_and_leaderboard(shared_data, tmp_path, monkeypatch):
    from tests.wandb_reader import logged_values

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = invoke("run", "--cell", "rnn_fused", "--budget", "smoke", "--wandb",
                    "--out", str(tmp_path), "--data-dir", str(shared_data))
    assert result.exit_code == 0, result.output
    closed_wandb_files()
    runs = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2  # the training run and the leaderboard
    values, tables = {}, {}
    for path in runs:
        logged = logged_values(path)
        values.update(logged)
        if "leaderboard/mnist-row/path" in logged:
            table_file = path.parent / "files" / json.loads(logged["leaderboard/mnist-row/path"])
            tables["mnist-row"] = json.loads(table_file.read_text())
    (row,) = ResultsStore(tmp_path).rows()
    assert float(values["test/accuracy"]) == pytest.approx(row["metric_value"])
    assert "summary/step_ms_median" in values
    assert values["leaderboard/mnist-row/_type"] == '"table-file"'
    assert tables["mnist-row"]["columns"][:5] == ["cell", "configuration", "precision",
                                                  "test accuracy (%), mean ± 95 % CI", "p vs best (Welch)"]
    entry, baseline = tables["mnist-row"]["data"]  # the run, then the task's baseline, marked
    assert entry[0] == "rnn_fused" and entry[2] == "32" and row["precision"] == "32"
    assert entry[3] == f"{100 * row['metric_value']:.2f} (n = 1: no interval)"
    (stored,) = ResultsStore(tmp_path).rows("baselines")
    assert baseline[0] == "baseline: majority class" and baseline[3] == f"{100 * stored['metric_value']:.2f}"
    assert values["leaderboard/mnist-row/best_cell"] == '"rnn_fused"'


def test_two_configurations_two_seeds_each_report_export_and_wandb(tmp_path, monkeypatch):
    """Configurations that differ only in a task option and dropout: two rows of n = 2 with an
    interval, a p-value and curves, in the report, the export and the W&B leaderboard."""
    import base64
    import hashlib

    from tests.wandb_reader import logged_values, records

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    common = ("run", "--task", "adding", "--cell", "gru_fused", "--layers", "2", "--seed", "0", "--seed", "1",
              "--budget", "smoke", "--wandb", "--out", str(tmp_path))
    assert invoke(*common, "-o", "length=20").exit_code == 0
    result = invoke(*common, "-o", "length=30", "--dropout", "0.2")
    assert result.exit_code == 0, result.output
    closed_wandb_files()
    text = (tmp_path / "report.md").read_text()
    lines = [line.strip("| ").split(" | ") for line in text.split("## adding")[1].splitlines() if line.startswith("| ")]
    rows = [dict(zip(lines[0], line)) for line in lines[2:] if line[0] == "gru_fused"]
    assert sorted(r["configuration"] for r in rows) == ["2x16 smoke dropout=0.0 length=20",
                                                        "2x16 smoke dropout=0.2 length=30"]
    for r in rows:
        assert " ± " in r["test mse, mean ± 95 % CI"] and r["n"] == "2"
    assert sorted(r["p vs best (Welch)"] == "best" for r in rows) == [False, True]
    assert all(r["p vs best (Welch)"] == "best" or r["p vs best (Welch)"][0].isdigit() for r in rows)
    assert "](report-adding-curves.png)" in text and "](report-adding-gradients.png)" in text
    assert invoke("export", "--out", str(tmp_path)).exit_code == 0
    with (tmp_path / "export" / "runs-grouped.csv").open() as f:
        grouped = list(csv.DictReader(f))
    assert [g["n"] for g in grouped] == ["2", "2"] and all(float(g["ci95_half_width"]) > 0 for g in grouped)
    assert any(g["p_vs_best"] for g in grouped)
    leaderboards = [p for p in sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
                    if "leaderboard/adding/path" in logged_values(p)]
    assert len(leaderboards) == 2  # one per command; the second holds both configurations
    last = leaderboards[-1]
    table = json.loads((last.parent / "files" / json.loads(logged_values(last)["leaderboard/adding/path"])).read_text())
    ranked = [dict(zip(table["columns"], row)) for row in table["data"] if row[0] == "gru_fused"]
    assert sorted(r["configuration"] for r in ranked) == sorted(r["configuration"] for r in rows)
    assert all(r["n"] == "2" for r in ranked)
    (artifact,) = [r.artifact for r in records(last) if r.WhichOneof("record_type") == "artifact"
                   and r.artifact.type == "results"]
    files = {e.path: e.digest for e in artifact.manifest.contents}
    assert {"results.sqlite", "report.md", "report-adding.png", "report-adding-curves.png"} <= set(files)
    digest = base64.b64encode(hashlib.md5((tmp_path / "report.md").read_bytes()).digest()).decode()
    assert files["report.md"] == digest


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_process_loses_no_finished_run_and_leaves_no_half_row(shared_data, tmp_path, sig):
    command = [sys.executable, "-m", "bench", "run", "--task", "mnist-row", "--task", "mnist-pixel",
               "--cell", "gru_handwritten", "--budget", "smoke", "--out", str(tmp_path), "--data-dir", str(shared_data)]
    # SIGINT's default action in the child, as at a terminal: a shell's background job (`cmd &`) ignores
    # SIGINT, a child inherits that, and Python then installs no KeyboardInterrupt handler
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env={**os.environ, "COLUMNS": "200"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in process.stdout:
            if line.startswith("[2/2]"):  # the first run is stored, the second has begun
                time.sleep(0.5)
                os.killpg(process.pid, sig)
                break
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = ResultsStore(tmp_path).rows()
    assert [(r["task"], r["status"]) for r in rows] == [("mnist-row", "ok")]
    result = invoke("run", "--task", "mnist-row", "--task", "mnist-pixel", "--cell", "gru_handwritten",
                    "--budget", "smoke", "--out", str(tmp_path), "--data-dir", str(shared_data))
    assert result.exit_code == 0, result.output
    assert "1 ok, 1 already done" in result.output
    assert sorted(r["task"] for r in ResultsStore(tmp_path).rows()) == ["mnist-pixel", "mnist-row"]


def test_the_usage_guide_documents_every_column():
    usage = (Path(__file__).resolve().parents[1] / "docs" / "usage.md").read_text()
    section = usage[usage.index("### Results store") :]
    for column in [*COLUMNS, *SPEED_COLUMNS, *BASELINE_COLUMNS]:
        assert f"`{column}`" in section, column


def test_more_workers_than_gpus_go_round_robin():
    assert device_slots(5, 2) == ([0, 1, 0, 1, 0], {0: 3, 1: 2})
    assert device_slots(2, 4) == ([0, 1], {0: 1, 1: 1})


def test_parallel_runs_share_the_cpu_one_run_per_worker(shared_data, tmp_path):
    result = invoke("run", "--task", "mnist-row", "--cell", "rnn_fused", "--cell", "gru_fused", "--budget", "smoke",
                    "--parallel", "2", "--out", str(tmp_path), "--data-dir", str(shared_data))
    assert result.exit_code == 0, result.output
    assert "2 ok" in result.output
    rows = ResultsStore(tmp_path).rows()
    assert sorted(r["cell"] for r in rows) == ["gru_fused", "rnn_fused"]
    threads = max(1, torch.get_num_threads() // 2)
    assert all(r["status"] == "ok" and r["environment"]["cpu_threads"] == threads for r in rows)
    assert [r["device_share"] for r in rows] == [2, 2], "both ran on the one CPU at once"
    assert "(device shared by 2)" in (tmp_path / "report.md").read_text()
    result = invoke("run", "--parallel", "2", "--devices", "2", "--out", str(tmp_path))
    assert result.exit_code == 2 and "cannot be combined with --devices" in result.output
    result = invoke("run", "--parallel", "0", "--out", str(tmp_path))
    assert result.exit_code == 2 and "--parallel must be a positive integer, got 0" in result.output


def test_wandb_offline_with_ddp_logs_one_run_id(shared_data, tmp_path, monkeypatch):
    from tests.wandb_reader import logged_values

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = invoke("run", "--cell", "rnn_fused", "--budget", "smoke", "--devices", "2", "--wandb",
                    "--out", str(tmp_path), "--data-dir", str(shared_data))
    assert result.exit_code == 0, result.output
    closed_wandb_files()
    training = [p for p in (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
                if "leaderboard/mnist-row/_type" not in logged_values(p)]
    assert len({p.stem for p in training}) == 1, [p.parent.name for p in training]  # fit, test, summary: one id
    values = {}
    for path in training:
        values.update(logged_values(path))
    assert "val/accuracy" in values and "test/accuracy" in values and "summary/step_ms_median" in values


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: trains on the GPU and reads the allocator peak")
def test_run_on_cuda_records_the_allocator_peak(shared_data, tmp_path):
    result = invoke("run", "--cell", "gru_handwritten", "--budget", "smoke", "--accelerator", "cuda",
                    "--out", str(tmp_path), "--data-dir", str(shared_data))
    assert result.exit_code == 0, result.output
    (row,) = ResultsStore(tmp_path).rows()
    assert row["device"].startswith("cuda: ") and row["memory_kind"] == "cuda allocator peak"
    assert row["peak_memory_bytes"] > row["params_bytes"] and row["environment"]["cuda"]
