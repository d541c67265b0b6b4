"""Shared fixtures, and the CI guard: under RNNBENCH_CI=1 a skipped test fails the run.

Tests that cannot run on a machine (no GPU) skip with a reason that starts with
"needs CUDA"; every other skip — a missing data folder, say — fails CI instead of passing
silently, and so does a run in which no test passed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = os.environ.get("RNNBENCH_CI") == "1"
ALLOWED_SKIP_PREFIX = "needs CUDA"
# the data folder beside the checkout, as on the machines that build this project
_CANDIDATES = [Path(__file__).resolve().parents[1].parent / "shared" / "data", Path("/work/shared/data")]
SHARED_DATA = (
    Path(os.environ["RNNBENCH_TEST_DATA"])
    if "RNNBENCH_TEST_DATA" in os.environ
    else next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
)

_unexpected_skips: list[str] = []
_passed = 0


def pytest_runtest_logreport(report):
    global _passed
    if report.passed and report.when == "call":
        _passed += 1
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not reason.removeprefix("Skipped: ").startswith(ALLOWED_SKIP_PREFIX):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if not IN_CI:
        return
    if _unexpected_skips:
        print("\nRNNBENCH_CI=1: these tests skipped, which CI does not allow:")
        print("\n".join(f"  {s}" for s in _unexpected_skips))
        session.exitstatus = 1
    if _passed == 0:
        print("\nRNNBENCH_CI=1: no test passed")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (MNIST, the dictionary) that tests read; skip (or fail in CI) without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not found (set RNNBENCH_TEST_DATA)")
    return SHARED_DATA.resolve()
