"""The matrix on a SLURM cluster: the pending runs go out as one job array through submitit (one
array task per run), and each task writes its own shard of the store, which `merge` folds in.

    rnnbench run --task mnist-row --cell lstm_fused --cell gru_fused --seed 0 --seed 1 \\
        --launcher slurm --partition gpu --gpus-per-run 1 --time-min 30 --out runs
    rnnbench status --out runs                  # pending / running / ok / failed, per run
    rnnbench merge --out runs                   # also done by `report` and by the next `run`

SQLite's locking is not reliable on network file systems, so no two processes write one file:
array task <job>_<index> writes `OUT/shards/<job>_<index>.sqlite` only. Checkpoints (and so
resuming) work as locally: a requeued or re-submitted run goes on from its last epoch.

A task at its time limit or pre-empted is requeued by submitit's checkpointing: the array task is
a `submitit.helpers.Checkpointable`, SLURM signals it (USR2) `signal_delay_s(time_min)` seconds
before the limit, submitit requeues the same task with the same arguments (`requeues` times for
time limits, three by default; without limit for pre-emption) and exits, and the requeued task resumes the run from
its last epoch's checkpoint. The claim of the dead attempt is taken over at once (`bench.claims`
knows the attempts of one SLURM job for one holder).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import submitit

SHARDS = "shards"
JOBS = Path("slurm") / "jobs.json"  # run_id -> SLURM job id of its array task, for `status` and `--wait`


@dataclass(frozen=True)
class SlurmOptions:
    """What a cluster needs to place one run; `extra` goes to sbatch as --KEY=VALUE."""

    partition: str | None = None
    time_min: int = 60  # per run
    gpus_per_run: int = 0
    cpus_per_run: int = 2
    array_parallelism: int = 256  # array tasks running at once
    requeues: int = 3  # at the time limit (submitit's default); pre-emption requeues without limit
    extra: tuple[tuple[str, str], ...] = ()


def shard_name(job_id: str) -> str:
    return f"{SHARDS}/{job_id.replace('/', '_')}.sqlite"


def signal_delay_s(time_min: int) -> int:
    """Seconds before the time limit at which SLURM warns a task: submitit's 90, or a quarter of a
    shorter limit (a task warned at its start would requeue itself before any epoch ended).
    SLURM may send it up to a minute early."""
    return min(90, 15 * time_min)


class ArrayTask(submitit.helpers.Checkpointable):
    """One array task: train and test one run and store it in this task's shard. Under
    `--devices N` SLURM starts N tasks of it (srun); Lightning's SLURM environment makes them one
    DDP run, and the first stores it. Checkpointable: requeued with the same arguments (its
    `checkpoint` is submitit's), it resumes the run from its last epoch."""

    def __call__(self, config, out: Path, data_dir, use_wandb: bool, download: bool,
                 keep_checkpoints: str) -> dict[str, Any]:
        import os

        from bench.quiet import quiet_libraries
        from bench.runner import run_and_store

        quiet_libraries()
        job = submitit.JobEnvironment()
        record = run_and_store(config, out, data_dir, use_wandb, False, download, keep_checkpoints,
                               store_name=shard_name(job.job_id), store_row=os.environ.get("SLURM_PROCID", "0") == "0")
        return {"run_id": config.run_id, "status": record["status"]}


def submit(configs: list, out: Path, data_dir, use_wandb: bool, download: bool, keep_checkpoints: str,
           options: SlurmOptions) -> str:
    """Submit the runs as one job array; return its job id. The array tasks' job ids are kept in
    OUT/slurm/jobs.json."""
    known = read_jobs(out)  # a damaged record stops the submission before anything is queued
    executor = submitit.AutoExecutor(folder=out / "slurm" / "%j", cluster="slurm", slurm_max_num_timeout=options.requeues)
    devices, nodes = max(c.devices for c in configs), max(c.nodes for c in configs)
    parameters: dict[str, Any] = {
        "name": "rnnbench", "timeout_min": options.time_min, "cpus_per_task": options.cpus_per_run,
        "slurm_array_parallelism": options.array_parallelism, "slurm_signal_delay_s": signal_delay_s(options.time_min),
        # --devices N --nodes M: N tasks on each of M nodes (srun starts them), each with one device
        "tasks_per_node": devices, "nodes": nodes,
        "slurm_additional_parameters": dict(options.extra),
    }
    if options.partition:
        parameters["slurm_partition"] = options.partition
    if options.gpus_per_run:
        parameters["gpus_per_node"] = options.gpus_per_run
    executor.update_parameters(**parameters)
    n = len(configs)
    jobs = executor.map_array(ArrayTask(), configs, [out] * n, [data_dir] * n, [use_wandb] * n, [download] * n,
                              [keep_checkpoints] * n)
    path = out / JOBS
    known.update({config.run_id: job.job_id for config, job in zip(configs, jobs)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(known, indent=1))
    return jobs[0].job_id.split("_")[0]


def read_jobs(out: Path) -> dict[str, str]:
    """OUT/slurm/jobs.json (run id -> job id); empty when absent; StoreError naming it when damaged."""
    from bench.store import StoreError

    path = out / JOBS
    if not path.is_file():
        return {}
    try:
        jobs = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: not JSON ({err}); delete it to forget the submitted jobs (their shards stay)") from None
    if not isinstance(jobs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in jobs.items()):
        raise StoreError(f"{path}: not a map of run ids to SLURM job ids; delete it to forget the submitted jobs "
                         "(their shards stay)")
    return jobs


def queue_states() -> dict[str, str]:
    """SLURM job id -> state (PENDING, RUNNING, ...) of this user's queued jobs, arrays expanded;
    empty when squeue cannot be asked."""
    try:
        lines = subprocess.run(["squeue", "-h", "-r", "--me", "-o", "%i %T"], capture_output=True, text=True,
                               check=True, timeout=60).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(line.split(maxsplit=1) for line in lines if line.strip())


def run_states(out: Path) -> list[dict[str, Any]]:
    """Per submitted run: its job id and state: the stored status (ok, failed, skipped) when a
    shard or the store holds its row, else the queue's (PENDING, RUNNING, ...), else `lost` (no
    row and not queued: killed, or the job failed before storing)."""
    from bench.store import stored_statuses

    jobs = read_jobs(out)
    if not jobs:
        return []
    stored = stored_statuses(out)
    queued = queue_states() if set(jobs) - set(stored) else {}
    return [{"run_id": run_id, "job_id": job, "state": stored.get(run_id) or queued.get(job, "lost")}
            for run_id, job in jobs.items()]


def wait(out: Path, run_ids: list[str], report: Callable[[dict[str, int]], None] = lambda counts: None,
         poll_s: float = 2.0) -> dict[str, int]:
    """Wait until none of `run_ids` is pending or running; report the counts of states when they change."""
    last: dict[str, int] | None = None
    while True:
        states = [s for s in run_states(out) if s["run_id"] in run_ids]
        counts: dict[str, int] = {}
        for s in states:
            counts[s["state"]] = counts.get(s["state"], 0) + 1
        if counts != last:
            report(counts)
            last = counts
        if all(s["state"] in ("ok", "failed", "skipped", "lost") for s in states):
            return counts
        time.sleep(poll_s)


def submit_matrix(configs: list, out: Path, data_dir, use_wandb: bool, download: bool, keep_checkpoints: str,
                  options: SlurmOptions, say: Callable[..., None]) -> tuple[str | None, list]:
    """`run --launcher slurm`: the job array of the runs not yet done (ok or skipped) in OUT's store;
    return its job id (None: nothing to submit) and those runs. ValueError for options a cluster
    cannot take or a machine without sbatch; a refusal of sbatch's is raised as it came."""
    import shutil

    from bench.store import stored_statuses

    for name in ("time_min", "cpus_per_run", "array_parallelism"):
        if getattr(options, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(options, name)}")
    for name in ("gpus_per_run", "requeues"):
        if getattr(options, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(options, name)}")
    if shutil.which("sbatch") is None:
        raise ValueError("--launcher slurm needs SLURM's sbatch on this machine's PATH (a cluster's login node)")
    done = stored_statuses(out)
    pending = [c for c in configs if done.get(c.run_id) not in ("ok", "skipped")]
    for config in configs:
        if config not in pending:
            say(f"{config.label}: already done, skipped", style="dim")
    if not pending:
        say("nothing to submit: every run is done")
        return None, []
    return submit(pending, out, data_dir, use_wandb, download, keep_checkpoints, options), pending
