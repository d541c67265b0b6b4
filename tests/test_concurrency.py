"""Nothing lost, nothing misreported: one worker per run (claims), a finished row that a later
failure never replaces, and signals that end `rnnbench run` with their own exit code and leave no
process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import claims
from bench.store import ResultsStore

QUICK_RUN = ["run", "--task", "adding", "-o", "length=5", "--cell", "gru_fused", "--budget", "smoke", "--no-progress"]
# an epoch of about half a second: a signal sent once the first checkpoint exists lands inside a later one
SLOW_RUN = ["run", "--task", "adding", "-o", "length=400", "--cell", "lstm_handwritten", "--budget", "smoke",
            "--no-progress"]


def rnnbench(args: list[str], **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env={**os.environ, "COLUMNS": "300"}, **popen)


def test_a_claim_is_exclusive_while_its_holder_lives_and_released_after(tmp_path):
    claim, holder = claims.claim_run(tmp_path / "run")
    assert claim is not None and holder is None
    other, holder = claims.claim_run(tmp_path / "run")
    assert other is None and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    claim.release()
    assert not (tmp_path / "run" / claims.CLAIM).exists()
    again, _ = claims.claim_run(tmp_path / "run")
    assert again is not None
    again.release()


def test_a_dead_holders_claim_is_taken_over(tmp_path):
    run = tmp_path / "runs" / "abc"
    run.mkdir(parents=True)
    path = run / claims.CLAIM
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "pid_start": "1",
                                "token": "dead", "since": 0}))
    assert claims.live_claims(tmp_path) == []
    claim, holder = claims.claim_run(run)
    assert claim is not None and json.loads(path.read_text())["token"] == claim.holder["token"]
    assert [r for r, _ in claims.live_claims(tmp_path)] == ["abc"]
    claim.release()
    # another host's claim: live while its heartbeat is fresh, dead once it is older than STALE_AFTER_S
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "remote", "since": 0}))
    assert claims.claim_run(run)[0] is None
    old = time.time() - claims.STALE_AFTER_S - 1
    os.utime(path, (old, old))
    claim, _ = claims.claim_run(run)
    assert claim is not None
    claim.release()
    assert list(run.iterdir()) == [], "no claim and nothing set aside is left"


def test_a_requeued_slurm_jobs_earlier_attempt_holds_no_claim(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "abc"
    run.mkdir(parents=True)
    path = run / claims.CLAIM
    # the first attempt, on another node, heartbeat fresh: live to anyone but its own job's later attempts
    path.write_text(json.dumps({"host": "node7", "pid": 1, "token": "first", "since": 0, "slurm_job": "41_3",
                                "slurm_restart": 0}))
    monkeypatch.setenv("SLURM_JOB_ID", "41_3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert claims.claim_run(run)[0] is None, "the same attempt (another process of it) is live"
    monkeypatch.setenv("SLURM_JOB_ID", "42_0")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert claims.claim_run(run)[0] is None, "another job's claim is live"
    monkeypatch.setenv("SLURM_JOB_ID", "41_3")
    claim, _ = claims.claim_run(run)
    assert claim is not None, "the requeued job takes its earlier attempt's claim at once"
    assert {k: claim.holder[k] for k in ("slurm_job", "slurm_restart")} == {"slurm_job": "41_3", "slurm_restart": 1}
    claim.release()


def test_an_ok_row_is_final(tmp_path):
    store = ResultsStore(tmp_path)
    row = {"run_id": "r1", "task": "adding", "task_version": 2, "cell": "gru_fused", "seed": 0, "budget": "smoke"}
    store.save({**row, "status": "failed", "error": "first try"})
    store.save({**row, "status": "ok", "metric_value": 0.5})
    (stored,) = store.rows()
    assert stored["status"] == "ok" and stored["error"] is None, "an ok row replaces a failed one, whole"
    store.save({**row, "status": "failed", "error": "Checkpoint file not found"})
    (stored,) = store.rows()
    assert stored["status"] == "ok" and stored["metric_value"] == 0.5 and stored["error"] is None


def test_three_processes_on_one_run_train_it_once(tmp_path):
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        processes = [rnnbench([*QUICK_RUN, "--out", str(out)]) for _ in range(3)]
        outputs = [p.communicate(timeout=300)[0] for p in processes]
        assert [p.returncode for p in processes] == [0, 0, 0], outputs
        trained = [o for o in outputs if ": ok " in o]
        assert len(trained) == 1, outputs
        others = [o for o in outputs if o not in trained]
        assert all("running elsewhere" in o or "already done" in o for o in others), others
        (row,) = ResultsStore(out).rows()
        assert row["status"] == "ok"
        assert not list(out.glob(f"runs/*/{claims.CLAIM}*")), "every claim is released"


def wait_for_checkpoint(out: Path, process: subprocess.Popen, count: int = 1) -> None:
    deadline = time.monotonic() + 300
    while len(list(out.glob("runs/*/resume/last.ckpt"))) < count:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_run_with_its_exit_code_and_the_same_command_resumes(tmp_path, sig, code):
    process = rnnbench([*SLOW_RUN, "--out", str(tmp_path)],
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for_checkpoint(tmp_path, process)
        os.kill(process.pid, sig)
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == code, output
    assert f"interrupted by {signal.Signals(sig).name}: stopped adding length=400 lstm_handwritten" in output
    assert "the same command resumes it" in output and "Traceback" not in output
    assert ResultsStore(tmp_path).rows() == [], "an interrupted run stores no row"
    assert list(tmp_path.glob("runs/*/resume/last.ckpt")), "its last checkpoint is kept"
    assert not list(tmp_path.glob(f"runs/*/{claims.CLAIM}")), "its claim is released"


def processes_in_group(group: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == group:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_sigterm_with_parallel_workers_leaves_no_process_behind(tmp_path):
    process = rnnbench([*SLOW_RUN, "--cell", "gru_handwritten", "--parallel", "2", "--out", str(tmp_path)])
    try:
        wait_for_checkpoint(tmp_path, process, count=2)  # both workers are training
        os.kill(process.pid, signal.SIGTERM)  # the parent alone, as a scheduler's kill of the command
        output = process.communicate(timeout=60)[0]
        deadline = time.monotonic() + 10
        while processes_in_group(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = processes_in_group(process.pid)
    finally:
        os.killpg(process.pid, signal.SIGKILL) if processes_in_group(process.pid) else None
    assert process.returncode == 143, output
    assert left == [], f"processes of the command outlived it: {left}"
    assert ResultsStore(tmp_path).rows() == [] and "BrokenPipeError" not in output
