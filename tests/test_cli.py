"""The command-line interface, run in-process through Typer's CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner

from bench.cli import app
from cells import CELLS

runner = CliRunner()


def test_list_shows_every_cell_with_its_description():
    for command in ("list", "cells"):
        result = runner.invoke(app, [command], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        for spec in CELLS:
            assert spec.name in result.output
            assert spec.description in result.output


def test_help_and_unknown_command():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "rnnbench list" in result.output
    result = runner.invoke(app, ["lsit"])
    assert result.exit_code != 0
