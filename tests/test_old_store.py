"""A results store written by an earlier revision opens, keeps its run and configuration ids, and
reports and exports as it did then.

`tests/data/store_before_layout/` holds a store made before the product's modules were rearranged
(its README names the revision and the commands), with the report and the exports that revision
wrote from it: a run is identified by the hash of what it computes, so a change that moves code
about must leave every stored id reproducible, or a repeated command would train its runs again
and the report would split one configuration in two.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.config import RunConfig, stored_config
from bench.store import ResultsStore, configuration_id

FIXTURE = Path(__file__).parent / "data" / "store_before_layout"

# the runs of the commands in the fixture's README
CONFIGS = [
    RunConfig("adding", "rnn_fused", budget="smoke", task_options=(("length", "20"),), accelerator="cpu"),
    RunConfig("adding", "gru_fused", budget="smoke", task_options=(("length", "20"),), accelerator="cpu"),
    RunConfig("mnist-row", "lstm_fused", budget="smoke", accelerator="cpu"),
    RunConfig("mnist-pixel", "gru_handwritten", budget="smoke", accelerator="cpu"),
    RunConfig("translation-de-en-attention", "lstm_fused", budget="smoke", accelerator="cpu"),
    RunConfig("segmentation-mnist-scenes", "gru_fused", budget="smoke", accelerator="cpu"),
    RunConfig("video-moving-mnist", "lstm_fused", budget="smoke", accelerator="cpu"),
    RunConfig("adding", "lstm_fused", budget="smoke", num_layers=2, bidirectional=True, dropout=0.1,
              accelerator="cpu"),
]


@pytest.fixture
def old_store(tmp_path) -> Path:
    shutil.copy(FIXTURE / "results.sqlite", tmp_path / "results.sqlite")
    return tmp_path


def test_the_runs_of_an_old_store_keep_their_ids(old_store):
    stored = {row["run_id"]: row for row in ResultsStore(old_store, readonly=True).rows()}
    assert len(stored) == len(CONFIGS)
    for config in CONFIGS:
        assert config.run_id in stored, f"{config.label}: its run id {config.run_id} is not the stored one"
        row = stored[config.run_id]
        # the configuration a run of this command stores now groups with the stored run
        assert configuration_id(stored_config(config), row["device"]) == row["configuration_id"], config.label
        assert row["status"] == "ok"


def test_an_old_store_reports_and_exports_as_before(old_store):
    runner = CliRunner()
    result = runner.invoke(app, ["report", "--out", str(old_store)])
    assert result.exit_code == 0, result.output
    assert (old_store / "report.md").read_text() == (FIXTURE / "report.md").read_text()
    for fmt in ("csv", "json"):
        result = runner.invoke(app, ["export", "--out", str(old_store), "--format", fmt])
        assert result.exit_code == 0, result.output
    for name in ("runs.csv", "runs-grouped.csv"):
        with open(old_store / "export" / name, newline="") as new, open(FIXTURE / name, newline="") as old:
            assert list(csv.reader(new)) == list(csv.reader(old)), name
    assert (json.loads((old_store / "export" / "runs-grouped.json").read_text())
            == json.loads((FIXTURE / "runs-grouped.json").read_text()))
