"""The command-line interface, run in-process through Typer's CliRunner."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.config import RunConfig
from cells import CELLS
from tasks import TASKS

runner = CliRunner()


def test_list_shows_every_cell_with_its_description():
    for command in ("list", "cells"):
        result = runner.invoke(app, [command], env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
        for spec in CELLS:
            assert spec.name in result.output
            assert spec.description in result.output
        for task in TASKS:
            assert task.name in result.output and task.description in result.output
        assert "beam=5 (beam width for the test; 1 decodes greedily)" in result.output


def test_help_and_unknown_command():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "rnnbench list" in result.output
    result = runner.invoke(app, ["lsit"])
    assert result.exit_code != 0


def test_the_cli_offers_the_runners_choices_without_importing_torch():
    """One list per choice (bench.choices), read by the CLI and the runner; the CLI module imports no
    torch, so that --help and a mistyped option answer at once."""
    done = subprocess.run([sys.executable, "-c", "import sys, bench.cli; print(sorted(m for m in sys.modules "
                           "if m.split('.')[0] in ('torch', 'lightning', 'cells', 'tasks')))"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
    from bench import choices, cli

    assert [choice.value for choice in cli.BudgetName] == list(choices.BUDGETS)
    assert [choice.value for choice in cli.Precision] == ["auto", *choices.PRECISIONS]
    result = runner.invoke(app, ["run", "--budget", "huge"])
    assert result.exit_code == 2 and "smoke" in result.output and "paper" in result.output
    with pytest.raises(ValueError, match="budget must be one of smoke, quick, paper, got 'huge'"):
        RunConfig("adding", "rnn_fused", budget="huge")
    with pytest.raises(ValueError, match="accelerator must be one of auto, cpu, cuda, got 'tpu'"):
        RunConfig("adding", "rnn_fused", accelerator="tpu")


def test_off_a_terminal_a_runs_line_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run([sys.executable, "-m", "bench", "run", "--task", "adding", "-o", "length=5", "--cell",
                           "lstm_handwritten", "--budget", "smoke", "--seed", "12345", "--out", str(tmp_path / "a long folder name")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if ": ok " in x]
    assert len(line) > 80 and line.startswith("[1/1] adding length=5") and line.endswith("ms/step)"), done.stdout
    assert (tmp_path / "a long folder name" / "report.md").as_posix() in done.stdout.splitlines()[-1]
