"""A full disk and damaged files: one line naming the path and the cause, a non-zero exit, no
traceback, no partial files, the store intact. The disk is a small tmpfs filled to the last byte
(mounting needs root, which CI has)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

RUN = ["run", "--task", "adding", "-o", "length=5", "--cell", "gru_fused", "--budget", "smoke", "--no-progress"]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)]).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 512, 1):  # to the last byte
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def rnnbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "400"})


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith((".partial", ".tmp"))]


def assert_one_line(result: subprocess.CompletedProcess, path: Path) -> None:
    assert result.returncode in (1, 2), result.stdout + result.stderr  # 2: refused before anything ran
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if "no space left on the device" in line]
    assert len(lines) == 1 and str(path) in lines[0], result.stderr


def test_a_run_on_a_full_disk(small_disk):
    out = small_disk / "out"
    fill(small_disk)
    assert_one_line(rnnbench(*RUN, "--out", str(out)), out / "results.sqlite")
    assert leftovers(small_disk) == [] and not (out / "results.sqlite").exists()


def test_a_checkpoint_on_a_full_disk_leaves_the_store_intact(small_disk):
    out = small_disk / "out"
    assert rnnbench(*RUN, "--out", str(out)).returncode == 0  # the store, its baseline and one run
    fill(small_disk)
    result = rnnbench(*RUN, "--seed", "1", "--out", str(out))
    assert_one_line(result, out / "runs")
    assert leftovers(small_disk) == []
    with sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT seed, status FROM runs").fetchall() == [(0, "ok")]


def test_report_and_export_on_a_full_disk(small_disk):
    out = small_disk / "out"
    assert rnnbench(*RUN, "--out", str(out)).returncode == 0
    for picture in out.glob("report*"):
        picture.unlink()
    store = (out / "results.sqlite").read_bytes()
    fill(small_disk)
    assert_one_line(rnnbench("report", "--out", str(out)), out / "report-adding")
    assert_one_line(rnnbench("export", "--out", str(out)), out / "export")
    assert leftovers(small_disk) == [] and (out / "results.sqlite").read_bytes() == store
