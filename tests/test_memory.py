"""The memory guard: a run that cannot fit is refused before it trains, one that drives the
machine's available memory under the floor is stopped, both stored as failed with the figures;
--no-memory-guard lets them run."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from bench import memory
from bench.cli import app
from bench.store import ResultsStore

RUN = ["run", "--task", "adding", "-o", "length=5", "--cell", "lstm_fused", "--budget", "smoke", "--no-progress"]
GIB = 2**30


def invoke(*args):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


@pytest.fixture(autouse=True)
def guard_on(monkeypatch):
    monkeypatch.delenv("RNNBENCH_NO_MEMORY_GUARD", raising=False)
    yield
    os.environ.pop("RNNBENCH_NO_MEMORY_GUARD", None)  # --no-memory-guard sets it for the workers


def test_the_static_estimate_counts_weights_gradients_and_optimizer_state():
    import torch

    network = torch.nn.Linear(10, 10)  # 110 float32 weights
    assert memory.static_bytes(network, "adamw") == 110 * 4 * 4 and memory.static_bytes(network, "rmsprop") == 110 * 4 * 3
    assert memory.cpu_memory()[1] > 0, "this machine reports its memory"


def test_a_run_that_cannot_fit_is_refused_and_stored_as_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "cpu_memory", lambda: (1000, 24 * GIB))  # 1,000 bytes available
    result = invoke(*RUN, "--out", str(tmp_path))
    assert result.exit_code == 1, result.output
    (row,) = ResultsStore(tmp_path).rows()
    assert row["status"] == "failed" and row["error"].startswith("MemoryGuardError: does not fit in memory")
    assert "0.0 GiB of the 24.0 GiB of CPU memory are available" in row["error"]
    assert not list(tmp_path.glob("runs/*/resume/last.ckpt")), "nothing trained"
    result = invoke(*RUN, "--out", str(tmp_path), "--no-memory-guard")
    assert result.exit_code == 0 and ResultsStore(tmp_path).rows()[0]["status"] == "ok", result.output


def test_a_run_that_drives_memory_under_the_floor_is_stopped(tmp_path, monkeypatch):
    readings = iter([(20 * GIB, 24 * GIB)])  # enough before it starts, then 0.1 GiB left at the first step
    monkeypatch.setattr(memory, "cpu_memory", lambda: next(readings, (GIB // 10, 24 * GIB)))
    result = invoke(*RUN, "--out", str(tmp_path))
    assert result.exit_code == 1, result.output
    (row,) = ResultsStore(tmp_path).rows()
    assert row["status"] == "failed" and "stopped before the machine ran out of memory: 0.1 GiB of 24.0 GiB" in row["error"]
    assert "under the floor of 1.2 GiB" in row["error"]
