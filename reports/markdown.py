"""The report: pure functions from stored run records to markdown tables and plots (no torch).

    rows = ResultsStore(out).rows()
    text = render(rows, plots={"mnist-row": "mnist-row.png"})
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

PERCENT_METRICS = {"accuracy"}
COLUMNS = ["cell", "model", "metric", "best val", "n", "test samples", "train s", "step ms", "samples/s", "peak memory", "parameters"]


def _model(row: dict[str, Any]) -> str:
    text = f"{row['num_layers']}x{row['hidden_size']}" + (" bi" if row["bidirectional"] else "")
    return text + (f" {row['devices']} dev" if row.get("devices", 1) > 1 else "")


def _scale(name: str) -> float:
    return 100.0 if name in PERCENT_METRICS else 1.0


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _bytes(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.2f} MiB"


def groups(rows: list[dict[str, Any]]) -> dict[str, dict[tuple, list[dict]]]:
    """ok runs by task, then by (cell, model, budget): the seeds of one configuration together."""
    out: dict[str, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["status"] == "ok":
            out[row["task"]][(row["cell"], _model(row), row["budget"])].append(row)
    return out


def leaderboard(rows: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Per task: column names and one row per (cell, model, budget), best primary metric first.

    The same rows go into the markdown report and into W&B tables.
    """
    tables = {}
    for task, configs in sorted(groups(rows).items()):
        body = []
        for (cell, model, budget), runs in configs.items():
            name = runs[0]["metric_name"]
            scale = _scale(name)
            mean, std = mean_std([r["metric_value"] * scale for r in runs])
            vals = [r["best_val_metric"] * scale for r in runs if r["best_val_metric"] is not None]
            body.append({
                "cell": cell, "model": model, "budget": budget, "metric_name": name,
                "metric_mean": mean, "metric_std": std, "n": len(runs),
                "best_val_mean": statistics.fmean(vals) if vals else None,
                "train_s": statistics.fmean(r["train_seconds"] for r in runs),
                "step_ms": statistics.median(r["step_ms_median"] for r in runs),
                "samples_per_s": statistics.median(r["samples_per_s"] for r in runs),
                "peak_memory_bytes": max(r["peak_memory_bytes"] for r in runs),
                "parameters": runs[0]["parameters"],
                "test_samples": min(r["test_samples"] or 0 for r in runs),
                "higher_is_better": bool(runs[0]["higher_is_better"]),
            })
        body.sort(key=lambda r: -r["metric_mean"] if r["higher_is_better"] else r["metric_mean"])
        tables[task] = body
    return tables


def _metric_cell(entry: dict[str, Any]) -> str:
    text = f"{entry['metric_mean']:.2f}"
    return text + (f" ± {entry['metric_std']:.2f}" if entry["metric_std"] is not None else "")


def table_rows(entries: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            e["cell"], f"{e['model']} {e['budget']}", _metric_cell(e),
            "-" if e["best_val_mean"] is None else f"{e['best_val_mean']:.2f}", str(e["n"]), str(e["test_samples"]),
            f"{e['train_s']:.1f}", f"{e['step_ms']:.2f}", f"{e['samples_per_s']:.0f}",
            _bytes(e["peak_memory_bytes"]), f"{e['parameters']:,}",
        ]
        for e in entries
    ]


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def render(rows: list[dict[str, Any]], plots: dict[str, str] | None = None) -> str:
    plots = plots or {}
    out = ["# rnnbench report", ""]
    if not rows:
        return "\n".join(out + ["No runs stored yet: run `rnnbench run ...` first.", ""])
    done = sum(r["status"] == "ok" for r in rows)
    out += [f"{len(rows)} runs stored: {done} ok, {sum(r['status'] == 'failed' for r in rows)} failed, "
            f"{sum(r['status'] == 'skipped' for r in rows)} skipped.", ""]
    memory_kinds = sorted({r["memory_kind"] for r in rows if r["status"] == "ok"})
    for task, entries in leaderboard(rows).items():
        name = entries[0]["metric_name"]
        unit = " (%)" if name in PERCENT_METRICS else ""
        header = list(COLUMNS)
        header[2] = f"test {name}{unit}, mean ± std"
        header[3] = f"best val {name}{unit}"
        out += [f"## {task}", "", markdown_table(header, table_rows(entries)), ""]
        if task in plots:
            out += [f"![{name} against training time, {task}]({plots[task]})", ""]
    out += [
        "Columns: test metric over the seeds (n); best validation value; training wall time (fit, with "
        "validation); median training step time; training samples per second from the median step; "
        "peak memory, which measures: " + "; ".join(memory_kinds) + "; trainable parameters.",
        "",
    ]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        out += ["## Failed and skipped runs", "",
                markdown_table(["task", "cell", "seed", "budget", "status", "error"],
                               [[r["task"], r["cell"], r["seed"], r["budget"], r["status"],
                                 (r["error"] or "").splitlines()[0][:200]] for r in failed]), ""]
    out += ["## Environment", ""]
    envs = defaultdict(list)
    for r in rows:
        env = r.get("environment") or {}
        key = (r["device"], env.get("torch"), env.get("lightning"), env.get("cuda"), env.get("cpu_threads"), r["git_revision"])
        envs[key].append(r)
    out.append(markdown_table(["device", "torch", "lightning", "CUDA", "CPU threads", "rnnbench revision", "runs"],
                              [[*(str(k) if k is not None else "-" for k in key), str(len(v))] for key, v in envs.items()]))
    return "\n".join(out) + "\n"


def plot_metric_vs_time(task: str, entries: list[dict[str, Any]], path: Path) -> Path:
    """Test metric (mean, std as error bar) against mean training time, one point per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for e in entries:
        ax.errorbar(e["train_s"], e["metric_mean"], yerr=e["metric_std"] or 0, fmt="o", capsize=3,
                    label=f"{e['cell']} {e['model']}")
    name = entries[0]["metric_name"]
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"test {name}" + (" (%)" if name in PERCENT_METRICS else ""))
    ax.set_title(task)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(rows: list[dict[str, Any]], out: Path) -> Path:
    """Write OUT/report.md and one PNG per task beside it."""
    out.mkdir(parents=True, exist_ok=True)
    plots = {}
    for task, entries in leaderboard(rows).items():
        name = f"report-{task}.png"
        plot_metric_vs_time(task, entries, out / name)
        plots[task] = name
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render(rows, plots))
    tmp.replace(path)
    return path
