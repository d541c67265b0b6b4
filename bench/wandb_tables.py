"""The leaderboard in Weights & Biases: the report's per-task tables as `wandb.Table`s."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from bench.runner import wandb_mode
from reports.leaderboard import baselines_for, leaderboard, published_for
from reports.markdown import task_table


def log_leaderboard(rows: list[dict[str, Any]], out: Path, baseline_rows: list[dict[str, Any]] = (),
                    targets: dict[str, float] | None = None, published: dict[str, list[dict[str, Any]]] | None = None
                    ) -> None:
    import wandb

    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rnnbench"), job_type="leaderboard",
                     name="leaderboard", dir=str(out), mode=wandb_mode())
    try:
        for task, entries in leaderboard(rows, targets).items():
            header, body = task_table(entries, baselines_for(entries, list(baseline_rows)),
                                      published_for(entries, (published or {}).get(task, [])))
            run.log({f"leaderboard/{task}": wandb.Table(columns=header, data=body)})
            run.summary[f"leaderboard/{task}/best_cell"] = entries[0]["cell"]
        # the store, the report and its pictures, versioned together
        artifact = wandb.Artifact("rnnbench-results", type="results",
                                  description="results.sqlite, report.md and the report's pictures")
        report = out / "report.md"
        pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text()) if report.is_file() else []
        for name in ["results.sqlite", "report.md", *dict.fromkeys(pictures)]:  # a run's pictures: runs/<id>/...
            if (out / name).is_file():
                artifact.add_file(str(out / name), name=name)
        run.log_artifact(artifact)
    finally:
        run.finish()
