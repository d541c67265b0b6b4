"""What a stored row holds: the columns of the store's tables, the ones stored as JSON, and the
identities of a run's configuration. The store (bench.store) writes by it and the reports read by
it; it sits here, below both, so that reports import nothing above them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def content_hash(value: Any) -> str:
    """The 16-hex-digit identity of a JSON-able value: run, configuration and baseline ids."""
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


NOT_CONFIGURATION = ("seed", "traceback")  # keys of a run's `config` that do not define its configuration


def configuration(config: dict[str, Any], device: str | None) -> dict[str, Any]:
    """What defines a run except its seed: its identity (task, version, options, cell, model, budget
    and the budget's settings, devices, accelerator) and the kind of device it ran on."""
    out = {k: v for k, v in config.items() if k not in NOT_CONFIGURATION}
    if isinstance(out.get("budget_config"), dict):  # its note describes the budget, it does not define it
        out["budget_config"] = {k: v for k, v in out["budget_config"].items() if k != "note"}
    return {**out, "device": device}


def configuration_id(config: dict[str, Any], device: str | None) -> str:
    # hashed in its stored (JSON) form, so that a row read back hashes as it did when written
    return content_hash(json.loads(json.dumps(configuration(config, device), sort_keys=True, default=str)))


COLUMNS = {
    "run_id": "TEXT PRIMARY KEY",
    "configuration_id": "TEXT",  # hash of everything but the seed (`configuration`): seeds of one configuration share it
    "task": "TEXT NOT NULL",
    "task_version": "INTEGER NOT NULL",
    "cell": "TEXT NOT NULL",
    "seed": "INTEGER NOT NULL",
    "budget": "TEXT NOT NULL",
    "num_layers": "INTEGER",
    "hidden_size": "INTEGER",
    "bidirectional": "INTEGER",
    "devices": "INTEGER",
    "nodes": "INTEGER",  # nodes of `devices` each (SLURM, multi-node DDP); empty for older rows: 1
    "precision": "TEXT",  # 32 | tf32 | bf16-mixed | 16-mixed (bench.precision); NULL: stored before the option
    "status": "TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'skipped'))",
    "error": "TEXT",
    "metric_name": "TEXT",
    "metric_value": "REAL",
    "higher_is_better": "INTEGER",
    "best_val_metric": "REAL",
    "test_samples": "INTEGER",
    "metrics": "TEXT",
    "train_seconds": "REAL",
    "step_ms_median": "REAL",
    "step_ms_iqr": "REAL",
    "samples_per_s": "REAL",
    "tokens_per_s": "REAL",
    "peak_memory_bytes": "INTEGER",
    "memory_kind": "TEXT",
    "saved_bytes": "INTEGER",
    "params_bytes": "INTEGER",
    "optimizer_bytes": "INTEGER",
    "parameters": "INTEGER",
    "epochs": "INTEGER",
    "steps": "INTEGER",
    "device": "TEXT",
    "device_share": "INTEGER",
    "resumed": "INTEGER",  # times the run went on from a checkpoint after its process was killed (0: never)  # runs of `--parallel` sharing the device while this one ran (1: alone)
    "environment": "TEXT",
    "git_revision": "TEXT",
    "config": "TEXT",
    "artifacts": "TEXT",
    "curve": "TEXT",
    "state_gradients": "TEXT",
    "started_at": "TEXT",
    "finished_at": "TEXT",
}
SPEED_COLUMNS = {  # table `speed`: one row per cell and shape measured by `rnnbench speed`
    "measurement_id": "TEXT PRIMARY KEY",
    "session": "TEXT NOT NULL",  # one `rnnbench speed` command: ratios compare within it
    "status": "TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'skipped'))",
    "error": "TEXT",
    "cell": "TEXT NOT NULL",
    "architecture": "TEXT",
    "twin": "TEXT",
    "shape": "TEXT NOT NULL",
    "shape_batch": "INTEGER",
    "shape_steps": "INTEGER",
    "shape_input_size": "INTEGER",
    "shape_hidden_size": "INTEGER",
    "shape_layers": "INTEGER",
    "shape_directions": "INTEGER",
    "shape_scan": "TEXT",  # a two-dimensional scan's name (bench.speed.Shape.scan); NULL: a sequence
    "device": "TEXT",
    "precision": "TEXT",  # of every cell, the floor and the peak matmul of the command (bench.precision)
    "forward_ms": "REAL",
    "forward_ms_iqr": "REAL",
    "forward_backward_ms": "REAL",
    "forward_backward_ms_iqr": "REAL",
    "ratio_to_fused": "REAL",
    "floor_forward_ms": "REAL",
    "floor_forward_backward_ms": "REAL",
    "tokens_per_s": "REAL",
    "flops_per_s": "REAL",
    "peak_flops_per_s": "REAL",
    "first_call_s": "REAL",
    "memory_bytes": "INTEGER",
    "memory_kind": "TEXT",
    "parameters": "INTEGER",
    "warmup": "INTEGER",
    "repeats": "INTEGER",
    "environment": "TEXT",
    "git_revision": "TEXT",
    "measured_at": "TEXT",
}
BASELINE_COLUMNS = {  # table `baselines`: a task's reference predictors, scored once per task configuration
    "baseline_id": "TEXT PRIMARY KEY",  # hash of (task configuration, budget, name)
    "task_configuration_id": "TEXT NOT NULL",  # hash of (task configuration less model-only options, budget): one test split
    "task": "TEXT NOT NULL",
    "task_version": "INTEGER NOT NULL",
    "task_options": "TEXT",
    "budget": "TEXT NOT NULL",
    "name": "TEXT NOT NULL",
    "description": "TEXT",
    "metric_name": "TEXT",
    "metric_value": "REAL",
    "higher_is_better": "INTEGER",
    "metrics": "TEXT",
    "test_samples": "INTEGER",
    "task_config": "TEXT",
    "git_revision": "TEXT",
    "computed_at": "TEXT",
}
TABLES = {"runs": COLUMNS, "speed": SPEED_COLUMNS, "baselines": BASELINE_COLUMNS}
JSON_COLUMNS = ("metrics", "environment", "config", "artifacts", "task_options", "task_config", "curve",
                "state_gradients")
