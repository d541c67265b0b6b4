"""SIGTERM and SIGINT during `rnnbench run`: the run in progress stops, nothing is stored for it, its
last epoch's checkpoint stays for the same command to resume from, and the command exits with
128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as a shell reports a process the
signal ended: a scheduler and `rnnbench run ... && ...` see that the work is not done.

Lightning, during a fit, puts its own SIGTERM handler in front of ours and then calls ours; left
alone it stops at the next batch's end with SIGTERMException, a SystemExit that exits with 0.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A signal ended the command. A BaseException, so that the runner's `except Exception`, which
    stores a failed run, lets it through: an interrupted run is not a result."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise `Interrupted` (once: a second signal while the
    first unwinds is ignored, so that the clean-up runs to its end)."""
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    fired = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG), so that a
    worker of `--parallel` never outlives a parent that was killed outright (SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent's own handler still ends the workers
