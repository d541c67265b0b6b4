"""One run, one worker: before a run trains, its process claims it with a file, OUT/runs/<id>/claim.json.

The claim is created with O_CREAT | O_EXCL, which is atomic on a local file system and on NFS
(version 3 and later), where `flock` and `fcntl` locks are not reliable. It names its holder
(host, pid, the process's start time, a random token) and its holder touches it every
`HEARTBEAT_S` seconds from a thread. A claim is live while its holder runs: on the same host,
while that process exists (its pid and start time match); from another host, while its last
heartbeat is younger than `STALE_AFTER_S`. A process that finds a dead holder's claim takes it
over: it renames the claim to a name of its own (one rename wins), checks that what it renamed
is the claim it judged dead (or puts it back), and creates its own.

Under SLURM the claim also names the job and its attempt (SLURM_JOB_ID, SLURM_RESTART_COUNT): a
requeued job's earlier attempt is over, so its claim is dead at once, from any host, rather than
after `STALE_AFTER_S` (long enough for the requeued task to skip its own run).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

CLAIM = "claim.json"
HEARTBEAT_S = 20.0
STALE_AFTER_S = 120.0  # six missed heartbeats: a holder on another host is taken for dead


def _process_start(pid: int) -> str | None:
    """The kernel's start time of process `pid` (clock ticks since boot), None where unknown: with
    the pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the command name


def _slurm_attempt() -> tuple[str, int] | None:
    """(job id, restart count) of the SLURM job this process runs in, None outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        return job, int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return job, 0


def _holder() -> dict[str, Any]:
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
              "token": uuid.uuid4().hex, "since": time.time()}
    attempt = _slurm_attempt()
    if attempt is not None:
        holder["slurm_job"], holder["slurm_restart"] = attempt
    return holder


def read_claim(path: Path) -> dict[str, Any] | None:
    """The claim's holder with its last heartbeat (`heartbeat`, seconds since the epoch), None when
    there is no claim; a claim cut short (its writer killed between creating and writing it) reads
    as a holder unknown since the file's time."""
    try:
        text, heartbeat = path.read_text(), path.stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = {}
    if not isinstance(holder, dict):
        holder = {}
    return {**holder, "heartbeat": heartbeat}


def is_live(holder: dict[str, Any], now: float | None = None) -> bool:
    """Whether the claim's holder still runs (module docstring)."""
    now = time.time() if now is None else now
    attempt = _slurm_attempt()
    if (attempt is not None and holder.get("slurm_job") == attempt[0] and isinstance(holder.get("slurm_restart"), int)
            and holder["slurm_restart"] < attempt[1]):
        return False  # an earlier attempt of this requeued job
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        start = _process_start(holder["pid"])
        if start is None:
            return False  # no such process here
        if holder.get("pid_start") is not None and start != holder["pid_start"]:
            return False  # the pid names another process now
        return True
    return now - holder["heartbeat"] < STALE_AFTER_S


class Claim:
    """A claim this process holds: heartbeats from a thread until `release`."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path, self.holder = path, holder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"rnnbench-claim-{path.parent.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass  # taken away (or the disk is gone): release finds out

    def release(self) -> None:
        """Remove the claim if it is still this process's."""
        self._stop.set()
        self._thread.join()
        current = read_claim(self.path)
        if current is not None and current.get("token") == self.holder["token"]:
            self.path.unlink(missing_ok=True)


def _create(path: Path) -> Claim | None:
    holder = _holder()
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(holder, f)
    except OSError as err:
        path.unlink(missing_ok=True)  # no half claim: a full disk must not hold the run for STALE_AFTER_S
        raise OSError(err.errno, err.strerror, str(path)) from err
    return Claim(path, holder)


def claim_run(run_dir: Path, attempts: int = 5) -> tuple[Claim | None, dict[str, Any] | None]:
    """(the claim, None) when this process now holds the run; (None, holder) when a live process
    holds it (`holder`: host, pid, since, heartbeat)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM
    holder = None
    for _ in range(attempts):
        claim = _create(path)
        if claim is not None:
            return claim, None
        holder = read_claim(path)
        if holder is None:
            continue  # released between the two calls: try again
        if is_live(holder):
            return None, holder
        # a dead holder's claim: take it over, unless another process did so first
        aside = path.with_name(f"{CLAIM}.dead-{uuid.uuid4().hex}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue
        moved = read_claim(aside)
        if moved is not None and moved.get("token") != holder.get("token"):
            # what was renamed is a newer claim, created after the dead one was read: put it back
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)
    return None, holder


def live_claims(out: Path) -> list[tuple[str, dict[str, Any]]]:
    """(run id, holder) of every live claim under OUT/runs."""
    found = []
    for path in sorted((Path(out) / "runs").glob(f"*/{CLAIM}")):
        holder = read_claim(path)
        if holder is not None and is_live(holder):
            found.append((path.parent.name, holder))
    return found
