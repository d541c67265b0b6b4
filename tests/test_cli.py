"""The command-line interface, run in-process through Typer's CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner

from bench.cli import app
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


def test_cli_choices_are_the_lists_the_runner_checks():
    """The CLI's choices are copies (importing the runner costs seconds); they must not drift."""
    from bench import cli
    from bench.precision import PRECISIONS
    from bench.runner import ACCELERATORS, KEEP_CHECKPOINTS
    from tasks.base import BUDGETS

    assert [choice.value for choice in cli.BudgetName] == list(BUDGETS)
    assert [choice.value for choice in cli.Accelerator] == list(ACCELERATORS)
    assert [choice.value for choice in cli.KeepCheckpoints] == list(KEEP_CHECKPOINTS)
    assert [choice.value for choice in cli.Precision] == ["auto", *PRECISIONS]
