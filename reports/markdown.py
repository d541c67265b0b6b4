"""The report: pure functions from stored run records to markdown tables and plots (no torch).

    rows = ResultsStore(out).rows()
    text = render(rows, plots={"mnist-row": "report-mnist-row.png"})
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

PERCENT_METRICS = {"accuracy", "miou", "pixel_accuracy", "no_eos"}  # stored as fractions, shown as %
NOT_SHOWN = {"loss", "samples"}  # test metrics kept in the store but not in the tables


def _model(row: dict[str, Any]) -> str:
    text = f"{row['num_layers']}x{row['hidden_size']}" + (" bi" if row["bidirectional"] else "")
    return text + (f" {row['devices']} dev" if (row.get("devices") or 1) > 1 else "")


def _scale(name: str) -> float:
    return 100.0 if name in PERCENT_METRICS else 1.0


def _label(name: str) -> str:
    return f"{name} (%)" if name in PERCENT_METRICS else name


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _bytes(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.2f} MiB"


def _number(value: float) -> str:
    """Two decimals, or three significant digits for small values (an MSE of 0.0009)."""
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def _mean_pm(mean: float, std: float | None) -> str:
    return _number(mean) + (f" ± {_number(std)}" if std is not None else "")


def groups(rows: list[dict[str, Any]]) -> dict[str, dict[tuple, list[dict]]]:
    """ok runs by task, then by (cell, model, budget): the seeds of one configuration together."""
    out: dict[str, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["status"] == "ok":
            out[row["task"]][(row["cell"], _model(row), row["budget"])].append(row)
    return out


def leaderboard(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per task: one entry per (cell, model, budget) with figures over its seeds, best first."""
    tables = {}
    for task, configs in sorted(groups(rows).items()):
        body = []
        for (cell, model, budget), runs in configs.items():
            name = runs[0]["metric_name"]
            scale = _scale(name)
            others = sorted({k for r in runs for k in (r["metrics"] or {})} - NOT_SHOWN - {name})
            vals = [r["best_val_metric"] * scale for r in runs if r["best_val_metric"] is not None]
            tokens = [r["tokens_per_s"] for r in runs if r.get("tokens_per_s")]
            body.append({
                "cell": cell, "model": model, "budget": budget, "metric_name": name,
                "metric": mean_std([r["metric_value"] * scale for r in runs]), "n": len(runs),
                "others": {k: mean_std([r["metrics"][k] * _scale(k) for r in runs if k in r["metrics"]]) for k in others},
                "best_val_mean": statistics.fmean(vals) if vals else None,
                "test_samples": min(r["test_samples"] or 0 for r in runs),
                "train_s": statistics.fmean(r["train_seconds"] for r in runs),
                "step_ms": statistics.median(r["step_ms_median"] for r in runs),
                "samples_per_s": statistics.median(r["samples_per_s"] for r in runs),
                "tokens_per_s": statistics.median(tokens) if tokens else None,
                "peak_memory_bytes": max(r["peak_memory_bytes"] for r in runs),
                "parameters": runs[0]["parameters"],
                "higher_is_better": bool(runs[0]["higher_is_better"]),
                "runs": runs,
            })
        body.sort(key=lambda e: -e["metric"][0] if e["higher_is_better"] else e["metric"][0])
        tables[task] = body
    return tables


def baselines_for(entries: list[dict[str, Any]], baseline_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The baselines scored on the test split of these runs: same task configuration and budget."""
    keys = {(json.dumps((r.get("config") or {}).get("task_config"), sort_keys=True), r["budget"])
            for e in entries for r in e["runs"]}
    newest = {}
    for b in baseline_rows:  # stored oldest first
        if (json.dumps(b["task_config"], sort_keys=True), b["budget"]) in keys:
            newest[(b["budget"], json.dumps(b["task_options"], sort_keys=True), b["name"])] = b
    return list(newest.values())


def _options(options: dict[str, Any] | None) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted((options or {}).items()))


def task_table(entries: list[dict[str, Any]], baselines: list[dict[str, Any]] = ()) -> tuple[list[str], list[list[str]]]:
    """The header and rows of one task's table: the markdown report and W&B show the same.
    Baselines follow the ranked rows, marked, outside the ranking."""
    name = entries[0]["metric_name"]
    others = sorted({k for e in entries for k in e["others"] if "@" not in k})
    with_tokens = any(e["tokens_per_s"] for e in entries)
    header = ["cell", "model", f"test {_label(name)}, mean ± std", f"best val {_label(name)}",
              *[f"test {_label(k)}" for k in others], "n", "test samples", "train s", "step ms", "samples/s",
              *(["tokens/s"] if with_tokens else []), "peak memory", "parameters"]
    body = []
    for e in entries:
        body.append([
            e["cell"], f"{e['model']} {e['budget']}", _mean_pm(*e["metric"]),
            "-" if e["best_val_mean"] is None else _number(e["best_val_mean"]),
            *[_mean_pm(*e["others"][k]) if k in e["others"] else "-" for k in others],
            str(e["n"]), str(e["test_samples"]), f"{e['train_s']:.1f}", f"{e['step_ms']:.2f}",
            f"{e['samples_per_s']:.0f}", *([f"{e['tokens_per_s']:.0f}" if e["tokens_per_s"] else "-"] if with_tokens else []),
            _bytes(e["peak_memory_bytes"]), f"{e['parameters']:,}",
        ])
    for b in baselines:
        metrics = b["metrics"] or {}
        body.append([
            f"baseline: {b['name']}", f"{b['budget']} {_options(b['task_options'])}".strip(),
            _number(b["metric_value"] * _scale(name)), "-",
            *[_number(metrics[k] * _scale(k)) if k in metrics else "-" for k in others],
            "-", str(b["test_samples"]), *["-"] * (5 + with_tokens),
        ])
    return header, body


def per_step_tables(entries: list[dict[str, Any]], baselines: list[dict[str, Any]] = ()) -> list[str]:
    """Metrics named `name@k` (e.g. the MSE of the k-th predicted frame): one table per name, a
    column per k, the configurations then the baselines as rows."""
    families: dict[str, set[int]] = defaultdict(set)
    for e in entries:
        for key in e["others"]:
            if "@" in key:
                family, _, step = key.partition("@")
                families[family].add(int(step))
    out = []
    for family, steps in sorted(families.items()):
        keys = [f"{family}@{k}" for k in sorted(steps)]
        body = [[e["cell"], f"{e['model']} {e['budget']}", *[_number(e["others"][k][0]) if k in e["others"] else "-"
                                                               for k in keys]] for e in entries]
        body += [[f"baseline: {b['name']}", b["budget"], *[_number(b["metrics"][k] * _scale(k)) if k in b["metrics"] else "-"
                                                         for k in keys]] for b in baselines]
        out += [f"Test {_label(family)} at each step k (mean over seeds):", "",
                markdown_table(["cell", "model", *[str(k) for k in sorted(steps)]], body), ""]
    return out


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _examples(entries: list[dict[str, Any]]) -> list[str]:
    """Example outputs a reader can judge, for the first seed of each configuration."""
    out = []
    for e in entries:
        artifacts = e["runs"][0].get("artifacts") or {}
        for picture in artifacts.get("pictures", []):  # paths relative to the results folder
            out += [f"**{e['cell']} {e['model']} {e['budget']}** (seed {e['runs'][0]['seed']}): {picture['caption']}", "",
                    f"![{e['cell']}]({picture['path']})", ""]
        if artifacts.get("examples"):
            out += [f"**{e['cell']} {e['model']} {e['budget']}** (seed {e['runs'][0]['seed']})", ""]
            out += [markdown_table(["source", "reference", "output"],
                                   [[x["source"], x["reference"], x["hypothesis"]] for x in artifacts["examples"]]), ""]
    if out:
        out = ["### Examples from the test set", ""] + out
    data = next((r["artifacts"] for e in entries for r in e["runs"] if (r.get("artifacts") or {}).get("corpus")), None)
    if data:
        corpus = data["corpus"]
        kept = ", ".join(f"{v} {k}" for k, v in sorted(corpus["not kept"].items())) or "none"
        splits = ", ".join(f"{k} {v}" for k, v in data["splits"].items())
        out += [f"Data: {corpus['pairs']} pairs from `{corpus['path']}` (md5 {corpus['md5']}); splits: {splits}; "
                f"not kept: {kept}.", ""]
    signatures = sorted({f"{k.removesuffix('_signature')}: `{v}`" for e in entries for r in e["runs"]
                         for k, v in (r.get("artifacts") or {}).items() if k.endswith("_signature")})
    if signatures:
        out += ["SacreBLEU signatures: " + "; ".join(signatures) + ".", ""]
    return out


def latest_speed(speed_rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The newest measurement of each (device, shape, cell), grouped by (device, shape)."""
    newest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in speed_rows:  # stored oldest first
        newest[(row["device"] or "-", row["shape"], row["cell"])] = row
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (device, shape, _), row in sorted(newest.items()):
        out[(device, shape)].append(row)
    return out


def render_speed(speed_rows: list[dict[str, Any]]) -> list[str]:
    if not speed_rows:
        return []
    out = ["## Speed of the cells", "",
           "From `rnnbench speed`: forward and forward+backward (loss = sum of outputs) medians with the "
           "interquartile range, after warm-up, device synchronised; `vs fused` = forward+backward time over "
           "that of the fused twin measured in the same command; matmul floor = forward+backward of the "
           "matmuls alone that a hand-written loop does (no element-wise work), timed in turn with the cells; "
           "GFLOP/s counts matmul FLOPs only (backward = twice the forward's, less the gradients nobody asked "
           "for), set against a large matmul measured in the same command; first call = one-time set-up such "
           "as compilation.", ""]
    for (device, shape), rows in latest_speed(speed_rows).items():
        ok = [r for r in rows if r["status"] == "ok"]
        first = ok[0] if ok else rows[0]
        dims = (f"B={first['shape_batch']} T={first['shape_steps']} I={first['shape_input_size']} "
                f"H={first['shape_hidden_size']} L={first['shape_layers']} D={first['shape_directions']}") if ok else ""
        out += [f"### {shape} on {device}" + (f" ({dims})" if dims else ""), ""]
        body = []
        for r in sorted(ok, key=lambda r: (r["architecture"], r["twin"] is not None, r["cell"])):
            body.append([r["cell"], f"{r['forward_ms']:.2f} ± {r['forward_ms_iqr']:.2f}",
                         f"{r['forward_backward_ms']:.2f} ± {r['forward_backward_ms_iqr']:.2f}",
                         "-" if r["ratio_to_fused"] is None else f"{r['ratio_to_fused']:.2f}",
                         "-" if r.get("floor_forward_backward_ms") is None else f"{r['floor_forward_backward_ms']:.2f}",
                         f"{r['tokens_per_s']:.0f}",
                         f"{r['flops_per_s'] / 1e9:.1f} ({100 * r['flops_per_s'] / r['peak_flops_per_s']:.1f} %)",
                         f"{r['first_call_s']:.2f}", _bytes(r["memory_bytes"])])
        if body:
            out += [markdown_table(["cell", "fwd ms", "fwd+bwd ms", "vs fused", "matmul floor ms", "tokens/s",
                                    "GFLOP/s (of peak)",
                                    "first call s", "memory"], body), ""]
            out += [f"Peak (large matmul): {first['peak_flops_per_s'] / 1e9:.1f} GFLOP/s; memory: {first['memory_kind']}; "
                    f"{first['repeats']} timed calls after {first['warmup']} warm-up; rnnbench {first['git_revision']}.", ""]
        for r in rows:
            if r["status"] != "ok":
                out += [f"- {r['cell']}: {r['status']}: {r['error']}"]
        if any(r["status"] != "ok" for r in rows):
            out.append("")
    return out


def render(rows: list[dict[str, Any]], plots: dict[str, str] | None = None,
           speed_rows: list[dict[str, Any]] | None = None, baseline_rows: list[dict[str, Any]] | None = None) -> str:
    plots = plots or {}
    out = ["# rnnbench report", ""]
    if not rows:
        out += ["No runs stored yet: run `rnnbench run ...` first.", ""]
        return "\n".join(out + render_speed(speed_rows or []))
    count = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped")}
    out += [f"{len(rows)} runs stored: {count['ok']} ok, {count['failed']} failed, {count['skipped']} skipped.", ""]
    memory_kinds = sorted({r["memory_kind"] for r in rows if r["status"] == "ok"})
    for task, entries in leaderboard(rows).items():
        baselines = baselines_for(entries, baseline_rows or [])
        out += [f"## {task}", "", markdown_table(*task_table(entries, baselines)), ""]
        out += per_step_tables(entries, baselines)
        if baselines:
            out += ["Baselines (rows marked `baseline:`, not ranked): " + "; ".join(
                f"{b['name']}: {b['description']}" for b in baselines) + ".", ""]
        notes = sorted({(r["budget"], (r.get("config") or {}).get("budget_config", {}).get("note", ""))
                        for e in entries for r in e["runs"]})
        if any(note for _, note in notes):
            out += ["Budgets: " + "; ".join(f"{budget}: {note}" for budget, note in notes if note) + ".", ""]
        if task in plots:
            out += [f"![{entries[0]['metric_name']} against training time, {task}]({plots[task]})", ""]
        out += _examples(entries)
    out += [
        "Columns: test metrics as mean ± std over the seeds (n); best validation value; training wall time "
        "(fit, with validation); median training step time; training samples (and tokens) per second; "
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
    out += [""] + render_speed(speed_rows or [])
    return "\n".join(out) + "\n"


def plot_metric_vs_time(task: str, entries: list[dict[str, Any]], path: Path) -> Path:
    """Test metric (mean, std as error bar) against mean training time, one point per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for e in entries:
        mean, std = e["metric"]
        ax.errorbar(e["train_s"], mean, yerr=std or 0, fmt="o", capsize=3, label=f"{e['cell']} {e['model']}")
    name = entries[0]["metric_name"]
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"test {_label(name)}")
    ax.set_title(task)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(rows: list[dict[str, Any]], out: Path, speed_rows: list[dict[str, Any]] | None = None,
                 baseline_rows: list[dict[str, Any]] | None = None) -> Path:
    """Write OUT/report.md and one PNG per task beside it."""
    out.mkdir(parents=True, exist_ok=True)
    plots = {}
    for task, entries in leaderboard(rows).items():
        name = f"report-{task}.png"
        plot_metric_vs_time(task, entries, out / name)
        plots[task] = name
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render(rows, plots, speed_rows, baseline_rows))
    tmp.replace(path)
    return path
