"""`benchmarks/gpu_check.sh` is the one command for a lent GPU's few minutes: it must parse, run
its stages in the order asked for within its time budget, and name the stages it leaves out.
`--plan` prints that choice without running anything, so it is tested here on the CPU."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def plan(*args: str) -> tuple[int, list[str], list[str], str]:
    """(exit code, stages to run, stages left out, stderr) of `gpu_check.sh OUT --plan ARGS`."""
    result = subprocess.run(["bash", str(SCRIPT), "unused-out", "--plan", *args], capture_output=True, text=True,
                            timeout=30)
    run, left = [], []
    for line in result.stdout.splitlines():
        if line.startswith("stages to run"):
            run = [s for s in line.split(": ", 1)[1].split() if s != "none"]
        if line.startswith("left out"):
            left = [s for s in line.split(": ", 1)[1].split() if s != "none"]
    return result.returncode, run, left, result.stderr


def test_script_parses():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_default_plan_puts_the_most_important_first_and_names_what_it_leaves_out():
    code, run, left, _ = plan()
    assert code == 0
    assert run[:2] == ["pytest", "paper-pixel"], run  # the CUDA tests, then the published protocol
    assert left, "every stage's limits together exceed one call: some must be left out and named"
    assert set(run) | set(left) == {"pytest", "paper-pixel", "paper-permuted", "density-paper", "speed-32", "speed-tf32",
                                    "speed-bf16-mixed", "speed-compiled", "speed-minimal", "harness", "packing"}
    assert not set(run) & set(left)


def test_stages_chosen_by_name_run_in_the_given_order_within_the_budget():
    code, run, left, _ = plan("--budget", "340", "paper-permuted", "pytest", "speed-32")
    assert code == 0
    assert run == ["paper-permuted", "speed-32"] and left == ["pytest"]  # 300 + 30 fit in 340; 110 more do not
    code, run, left, _ = plan("--budget", "10", "harness")
    assert (code, run, left) == (0, [], ["harness"])


@pytest.mark.parametrize("args, message", [
    (["nonsense-stage"], "unknown stage 'nonsense-stage'; stages: pytest paper-pixel"),
    (["--budget", "ten"], "--budget must be a whole number of seconds, got 'ten'"),
    (["--fast"], "unknown option --fast"),
])
def test_bad_arguments_are_named(args, message):
    code, _, _, stderr = plan(*args)
    assert code == 2 and message in stderr, stderr
