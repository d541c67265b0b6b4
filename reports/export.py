"""Stored rows and the report's grouped figures as CSV or JSON files, for pandas or a spreadsheet.

    rnnbench export --out runs --format csv            # runs/export/runs.csv, runs/export/runs-grouped.csv
    rnnbench export --out runs --format json --table speed
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from reports.rows import JSON_COLUMNS, TABLES
from reports.leaderboard import leaderboard, seconds_to_target

FORMATS = ("csv", "json")


def grouped_rows(rows: list[dict[str, Any]], targets: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per configuration: the figures of the report's tables, unformatted (metrics in
    the report's units)."""
    out = []
    for task, entries in leaderboard(rows, targets).items():
        for rank, e in enumerate(entries, 1):
            mean, half_width = e["metric"]
            to_target, reaching = seconds_to_target(e)
            out.append({
                "task": task, "rank": rank, "configuration_id": e["configuration_id"], "cell": e["cell"],
                "configuration": e["label"], "budget": e["budget"], "metric_name": e["metric_name"],
                "n": e["n"], "mean": mean, "ci95_half_width": half_width, "std": e["std"],
                "p_vs_best": e["p_vs_best"], "seeds": [r["seed"] for r in e["runs"]], "values": e["values"],
                "best_val_mean": e["best_val_mean"],
                **{f"mean_{k}": v[0] for k, v in e["others"].items()},
                "target": e["target"], "seconds_to_target": to_target,
                "seeds_reaching_target": reaching if e["target"] is not None else None,
                "train_s": e["train_s"], "step_ms": e["step_ms"], "samples_per_s": e["samples_per_s"],
                "tokens_per_s": e["tokens_per_s"], "peak_memory_bytes": e["peak_memory_bytes"],
                "parameters": e["parameters"], "run_ids": [r["run_id"] for r in e["runs"]],
            })
    return out


def _write(rows: list[dict[str, Any]], path: Path, fmt: str) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        if fmt == "json":
            tmp.write_text(json.dumps(rows, indent=1, default=str))
        else:
            columns = list(dict.fromkeys(k for r in rows for k in r))
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, columns)
                writer.writeheader()
                for r in rows:  # nested values (metrics, config, curve, lists) as JSON text
                    writer.writerow({k: json.dumps(v, sort_keys=True, default=str)
                                     if isinstance(v, (dict, list)) or (k in JSON_COLUMNS and v is not None) else v
                                     for k, v in r.items()})
        tmp.replace(path)
    except OSError as err:  # a failed write does not say which file
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half file
    return path


def export(store_rows: dict[str, list[dict[str, Any]]], table: str, fmt: str, dest: Path,
           targets: dict[str, float] | None = None) -> list[Path]:
    """Write `dest/TABLE.FMT` (every stored row and column) and, for `runs`, `dest/runs-grouped.FMT`
    (one row per configuration). `store_rows`: table name -> rows as `ResultsStore.rows` gives them."""
    if table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}, got {table!r}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    dest.mkdir(parents=True, exist_ok=True)
    rows = store_rows[table]
    paths = [_write(rows, dest / f"{table}.{fmt}", fmt)]
    if table == "runs":
        paths.append(_write(grouped_rows(rows, targets), dest / f"runs-grouped.{fmt}", fmt))
    return paths
