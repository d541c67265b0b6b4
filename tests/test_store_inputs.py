"""The output folder, the results store and the seeds are inputs too: each unusable one is a clear
error that names it, exits 2 without a traceback, and changes nothing on disk."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.store import APPLICATION_ID, SCHEMA_VERSION, ResultsStore

runner = CliRunner()
COMMANDS = {  # each command that opens OUT, with what it needs besides --out
    "run": ["run", "--task", "adding", "--cell", "rnn_fused", "--budget", "smoke", "-o", "length=5"],
    "speed": ["speed", "--cell", "rnn_fused", "--shape", "2,3,2,4", "--repeats", "1", "--warmup", "0"],
    "report": ["report"],
    "export": ["export"],
}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a hash of its bytes (and every folder): what 'nothing changed' compares."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def invoke(command: str, out: Path):
    result = runner.invoke(app, [*COMMANDS[command], "--out", str(out)], env={"COLUMNS": "300"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.parametrize("command", list(COMMANDS))
def test_out_that_is_a_file(command, tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    before = snapshot(tmp_path)
    result = invoke(command, out)
    assert result.exit_code == 2, result.output
    assert str(out) in result.output and "exists and is not a folder" in result.output
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", list(COMMANDS))
def test_store_that_is_not_sqlite(command, tmp_path):
    (tmp_path / "results.sqlite").write_text("name,accuracy\nlstm,0.9\n")
    before = snapshot(tmp_path)
    result = invoke(command, tmp_path)
    assert result.exit_code == 2, result.output
    assert f"results store {tmp_path / 'results.sqlite'}: not a SQLite database" in result.output.replace("\n", "")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", list(COMMANDS))
def test_store_from_a_newer_rnnbench(command, tmp_path):
    ResultsStore(tmp_path)
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = snapshot(tmp_path)
    result = invoke(command, tmp_path)
    assert result.exit_code == 2, result.output
    assert f"written by a newer rnnbench (store schema {SCHEMA_VERSION + 1}; this rnnbench reads up to " \
           f"{SCHEMA_VERSION})" in result.output.replace("\n", "")
    assert snapshot(tmp_path) == before


def test_store_that_is_a_folder(tmp_path):
    (tmp_path / "results.sqlite").mkdir()
    result = invoke("run", tmp_path)
    assert result.exit_code == 2 and "results store" in result.output and "exists and is not a file" in result.output


def test_out_that_is_not_writable(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits; /sys refuses even root (or is read-only)
        out = Path("/sys/rnnbench-out")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "out"
    result = invoke("run", out)
    assert result.exit_code == 2, result.output
    assert "output folder" in result.output and "not writable" in result.output
    assert not out.exists()


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_outside_what_the_libraries_accept(seed, tmp_path):
    result = runner.invoke(app, ["run", "--task", "adding", "--seed", seed, "--out", str(tmp_path / "out")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert f"seed must be an integer in [0, {2**32 - 1}]" in result.output and seed in result.output
    assert not (tmp_path / "out").exists()


def test_an_older_store_is_upgraded_and_marked(tmp_path):
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, task TEXT, task_version INTEGER, cell TEXT, "
                   "seed INTEGER, budget TEXT, status TEXT)")
    ResultsStore(tmp_path)
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "precision" in {row[1] for row in db.execute("PRAGMA table_info(runs)")}
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


FOREIGN = {  # a database that is not rnnbench's, and the words that say why
    "another program's mark": (["CREATE TABLE runs (run_id TEXT)", "PRAGMA application_id = 1234"],
                               "a SQLite database of another program (application_id 0x4d2"),
    "other tables": (["CREATE TABLE invoices (id INTEGER, total REAL)"], "none of rnnbench's runs, speed, baselines"),
    "a runs table beside others": (["CREATE TABLE runs (run_id TEXT)", "CREATE TABLE users (name TEXT)"],
                                   "it also holds the tables users"),
    "runs without its columns": (["CREATE TABLE runs (run_id TEXT PRIMARY KEY, score REAL)"],
                                 "its table runs lacks the columns task, task_version, cell, seed, budget, status"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_database_that_is_not_rnnbenchs_is_refused_and_left_as_it_was(command, kind, tmp_path):
    statements, why = FOREIGN[kind]
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        for statement in statements:
            db.execute(statement)
    before = snapshot(tmp_path)
    result = invoke(command, tmp_path)
    assert result.exit_code == 2, result.output
    text = result.output.replace("\n", "")
    assert f"results store {tmp_path / 'results.sqlite'}: " in text and why in text and "nothing was changed" in text
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["report", "export", "status", "merge"])
def test_a_reading_command_writes_nothing_to_the_store_and_wants_an_existing_folder(command, tmp_path):
    missing = tmp_path / "nowhere"
    result = runner.invoke(app, [command, "--out", str(missing)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and f"output folder {missing}: does not exist" in result.output, result.output
    assert not missing.exists()
    # a store of an older rnnbench (no mark, fewer columns): read as it is, not upgraded
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, task TEXT, task_version INTEGER, cell TEXT, "
                   "seed INTEGER, budget TEXT, status TEXT)")
        db.execute("INSERT INTO runs VALUES ('r', 'adding', 1, 'gru_fused', 0, 'smoke', 'failed')")
    store = (tmp_path / "results.sqlite").read_bytes()
    result = runner.invoke(app, [command, "--out", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results.sqlite").read_bytes() == store, f"{command} changed the store"


def rnnbench(*args: str) -> subprocess.CompletedProcess:
    """The command as a user starts it (through `main`, which turns late store errors into one line)."""
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "300"})


def test_a_row_damaged_by_hand_is_named_by_report_and_export(tmp_path):
    result = runner.invoke(app, [*COMMANDS["run"], "--out", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    (row,) = ResultsStore(tmp_path).rows()
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        db.execute("UPDATE runs SET curve = '{cut short'")
    before = snapshot(tmp_path)
    for command in ("report", "export"):
        done = rnnbench(command, "--out", str(tmp_path))
        assert done.returncode == 2, done.stderr
        assert f"runs row {row['run_id']}: column curve is not JSON" in done.stderr and "Traceback" not in done.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("text, why", [('{"abc": ', "not JSON"), ("[1, 2]", "not a map of run ids to SLURM job ids")])
def test_a_damaged_record_of_submitted_jobs_is_named(text, why, tmp_path):
    result = runner.invoke(app, [*COMMANDS["run"], "--out", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "jobs.json").write_text(text)
    done = rnnbench("status", "--out", str(tmp_path))
    assert done.returncode == 2 and f"{tmp_path / 'slurm' / 'jobs.json'}: {why}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_task_option_given_twice_and_repeated_values(tmp_path):
    twice = runner.invoke(app, ["run", "--task", "adding", "-o", "length=5", "-o", "length=6", "--budget", "smoke",
                                "--out", str(tmp_path)], env={"COLUMNS": "300"})
    assert twice.exit_code == 2 and "--task-option length given twice (5 and 6)" in twice.output, twice.output
    repeated = runner.invoke(app, ["run", "--task", "adding", "-o", "length=5", "-o", "length=5", "--cell", "gru_fused",
                                   "--cell", "gru_fused", "--seed", "0", "--seed", "0", "--budget", "smoke",
                                   "--no-progress", "--out", str(tmp_path)], env={"COLUMNS": "300"})
    assert repeated.exit_code == 0 and "[1/1]" in repeated.output and "1 ok" in repeated.output, repeated.output


def test_an_out_that_cannot_be_created_names_itself_and_where(tmp_path):
    blocked = Path("/proc/rnnbench-out")
    result = invoke("run", blocked)
    assert result.exit_code == 2 and f"output folder {blocked}: cannot be created in /proc: not writable" in result.output
