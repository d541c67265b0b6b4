"""`benchmarks/gpu_check.sh` is the one command for a lent GPU's few minutes: it must parse, and
its stages' time limits must add up to less than the 8 minutes it promises."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def stage_limits(text: str) -> list[tuple[str, int]]:
    """(stage, seconds) for every stage the script runs, a stage inside a `for` loop once per item."""
    limits = []
    loop_items = 1
    for line in text.splitlines():
        loop = re.match(r"\s*for \w+ in (.+); do", line)
        if loop:
            loop_items = len(loop.group(1).split())
            continue
        if re.match(r"\s*done\b", line):
            loop_items = 1
            continue
        stage = re.match(r"\s*stage (\S+) (\d+) ", line)
        if stage:
            limits += [(stage.group(1), int(stage.group(2)))] * loop_items
    return limits


def test_stage_limits_fit_eight_minutes():
    limits = stage_limits(SCRIPT.read_text())
    names = {name for name, _ in limits}
    assert {"pytest", "speed-compiled", "harness", "packing"} <= names, names
    assert len(limits) == 10  # pytest, 3 precisions, compiled, harness, packing, 3 pixel cells
    assert sum(seconds for _, seconds in limits) <= 480, limits


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_parses():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
