"""The matrix on SLURM: a job array through submitit on a real single-node cluster, one shard per
array task, merged into the store; `status` and `merge` on what it left."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.store import ResultsStore, merge_shards

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm_cluster.sh"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


def cluster_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A cluster to submit to: the one SLURM_CONF names when it answers (CI starts one with
    scripts/slurm_cluster.sh), else one this fixture starts and stops (as root)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"SLURM's tools are absent ({', '.join(missing)}): "
                    "apt-get install -y slurmctld slurmd slurm-client munge")
    if os.environ.get("SLURM_CONF") and cluster_answers():
        yield os.environ["SLURM_CONF"]
        return
    if os.geteuid() != 0:
        pytest.skip("starting a SLURM cluster takes root (or start one and set SLURM_CONF)")
    folder = tmp_path_factory.mktemp("slurm")
    subprocess.run([str(SCRIPT), "start", str(folder)], check=True, timeout=90)
    try:
        yield str(folder / "slurm.conf")
    finally:
        subprocess.run([str(SCRIPT), "stop", str(folder)], timeout=30)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


def test_a_matrix_runs_as_a_job_array_and_merges(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    matrix = ["run", "--task", "adding", "-o", "length=5", "--cell", "gru_fused", "--cell", "rnn_fused",
              "--seed", "0", "--seed", "1", "--budget", "smoke", "--launcher", "slurm", "--cpus-per-run", "1",
              "--out", str(tmp_path)]
    result = invoke(*matrix, "--wait")
    assert result.exit_code == 0, result.output
    assert "submitted 4 runs as SLURM job array" in result.output and "4 ok; report:" in result.output
    shards = sorted(p.name for p in (tmp_path / "shards").glob("*.sqlite"))
    assert len(shards) == 4, "one shard per array task"
    rows = ResultsStore(tmp_path).rows()
    assert sorted((r["cell"], r["seed"], r["status"]) for r in rows) == [
        ("gru_fused", 0, "ok"), ("gru_fused", 1, "ok"), ("rnn_fused", 0, "ok"), ("rnn_fused", 1, "ok")]
    report = (tmp_path / "report.md").read_text()
    assert "## adding" in report and "gru_fused" in report and "rnn_fused" in report

    status = invoke("status", "--out", str(tmp_path))
    assert status.exit_code == 0 and "4 ok" in status.output
    job = shards[0].split("_")[0]
    assert f"{job}_0" in status.output and "adding gru_fused seed=0" in status.output

    merged = invoke("merge", "--out", str(tmp_path))
    assert merged.exit_code == 0 and "merged: 0 runs" in merged.output, "merging again changes nothing"
    assert len(ResultsStore(tmp_path).rows()) == 4
    again = invoke(*matrix)
    assert again.exit_code == 0 and "nothing to submit: every run is done" in again.output


def test_a_run_at_its_time_limit_is_requeued_and_goes_on_from_its_last_epoch(slurm_cluster, tmp_path, monkeypatch):
    """A real time limit: a run of about 130 s (10 epochs) under a 2-minute limit. SLURM signals the
    task before the limit, submitit requeues it, and the requeued task resumes from the last epoch's
    checkpoint, taking over the dead attempt's claim, and stores the run once.

    SLURM checks time limits every 30 s and signals at the first check within a minute of the
    warning time (30 s before a 2-minute limit): 60 to 90 s into an attempt, so every attempt
    trains for a minute, more than the run's startup and an epoch even on a busy machine, and the
    first cannot finish 10 epochs of about 12 s."""
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    result = invoke("run", "--task", "adding", "-o", "length=400", "--cell", "rnn_fused", "--launcher", "slurm",
                    "--time-min", "2", "--requeues", "6", "--cpus-per-run", "2", "--wait", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "1 ok; report:" in result.output
    (row,) = ResultsStore(tmp_path).rows()
    assert row["status"] == "ok" and row["epochs"] == 10 and row["resumed"] >= 1, (row["resumed"], row["epochs"])
    assert [c["epoch"] for c in row["curve"]] == list(range(1, 11)), "every epoch once: none redone, none lost"
    (folder,) = (tmp_path / "slurm").glob("[0-9]*")
    assert "#SBATCH --signal=USR2@30" in next(folder.glob("*_submission.sh")).read_text()
    log = "".join(p.read_text() for p in folder.glob("*_log.err"))
    assert "Caught signal SIGUSR2" in log and "this job is timed-out" in log, log[-2000:]
    assert not list(tmp_path.glob("runs/*/claim.json")) and not list(tmp_path.glob("runs/*/resume"))


def test_a_short_time_limit_is_warned_a_quarter_before_its_end():
    from bench.slurm import signal_delay_s

    assert [signal_delay_s(m) for m in (1, 2, 5, 6, 60)] == [15, 30, 75, 90, 90]


def record(run_id: str, status: str, value: float | None) -> dict:
    return {"run_id": run_id, "task": "adding", "task_version": 1, "cell": "gru_fused", "seed": 0, "budget": "smoke",
            "status": status, "metric_value": value}


def test_merge_is_idempotent_and_a_run_done_twice_keeps_one_row(tmp_path):
    ResultsStore(tmp_path, "shards/7_0.sqlite").save(record("a", "failed", None))
    ResultsStore(tmp_path, "shards/8_0.sqlite").save(record("a", "ok", 0.5))  # the same run, tried again
    ResultsStore(tmp_path, "shards/8_1.sqlite").save(record("b", "ok", 0.25))
    assert merge_shards(tmp_path)["runs"] == 3  # a (failed), then a (ok) over it, then b
    assert merge_shards(tmp_path)["runs"] == 0
    rows = {r["run_id"]: r for r in ResultsStore(tmp_path).rows()}
    assert {k: (r["status"], r["metric_value"]) for k, r in rows.items()} == {"a": ("ok", 0.5), "b": ("ok", 0.25)}
    ResultsStore(tmp_path, "shards/9_0.sqlite").save(record("b", "failed", None))  # a later failure of a done run
    merge_shards(tmp_path)
    assert ResultsStore(tmp_path).rows()[1]["status"] == "ok"


def test_one_node_keeps_the_run_identity_and_several_need_the_scheduler(tmp_path):
    from bench.config import RunConfig

    one = RunConfig(task="adding", cell="gru_fused", accelerator="cpu")
    assert "nodes" not in one.identity() and RunConfig(task="adding", cell="gru_fused", accelerator="cpu",
                                                       nodes=2).run_id != one.run_id
    result = invoke("run", "--task", "adding", "--nodes", "2", "--out", str(tmp_path))
    assert result.exit_code == 2 and "--nodes 2: runs span several nodes only through a scheduler" in result.output


def test_slurm_options_are_checked(tmp_path):
    result = invoke("run", "--task", "adding", "--launcher", "slurm", "--slurm-option", "account", "--out", str(tmp_path))
    assert result.exit_code == 2 and "--slurm-option must be KEY=VALUE" in result.output
    result = invoke("run", "--task", "adding", "--launcher", "slurm", "--requeues", "-1", "--out", str(tmp_path))
    assert result.exit_code == 2 and "--requeues must be >= 0, got -1" in result.output
    result = invoke("run", "--task", "adding", "--launcher", "slurm", "--time-min", "0", "--out", str(tmp_path))
    assert result.exit_code == 2 and "--time-min must be a positive integer, got 0" in result.output


def test_a_run_on_two_devices_is_one_ddp_job_of_two_srun_tasks(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    result = invoke("run", "--task", "adding", "-o", "length=5", "--cell", "gru_fused", "--budget", "smoke",
                    "--devices", "2", "--accelerator", "cpu", "--launcher", "slurm", "--cpus-per-run", "1", "--wait",
                    "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    (row,) = ResultsStore(tmp_path).rows()
    assert row["status"] == "ok" and row["devices"] == 2
    # one process group of two: each step trains a batch of 32 on each process
    assert row["samples_per_s"] * row["step_ms_median"] / 1e3 == pytest.approx(64)
    logs = sorted((tmp_path / "slurm").glob("*/*_log.out"))
    ranks = {line.split("global_rank=")[1].split(")")[0] + ")" for log in logs for line in log.read_text().splitlines()
             if "global_rank=" in line}
    assert ranks == {"0(2)", "1(2)"}, "srun started the two tasks of the run"
