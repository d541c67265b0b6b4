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

from reports.rows import configuration, configuration_id
from reports import figures

PERCENT_METRICS = {"accuracy", "miou", "pixel_accuracy", "no_eos"}  # stored as fractions, shown as %
NOT_SHOWN = {"loss", "samples"}  # test metrics kept in the store but not in the tables


def _model(row: dict[str, Any]) -> str:
    text = f"{row['num_layers']}x{row['hidden_size']}" + (" bi" if row["bidirectional"] else "")
    text += f" {row['devices']} dev" if (row.get("devices") or 1) > 1 else ""
    return text + (f" x {row['nodes']} nodes" if (row.get("nodes") or 1) > 1 else "")


def _scale(name: str) -> float:
    return 100.0 if name in PERCENT_METRICS else 1.0


def _label(name: str) -> str:
    return f"{name} (%)" if name in PERCENT_METRICS else name


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float | None]:
    """Mean and the half-width of its Student-t confidence interval over the seeds (None for n = 1)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5)


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) between two sets of seeds; None when
    untestable: fewer than two values on a side, or no spread on either side."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0):
        return None
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _bytes(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.2f} MiB"


def _number(value: float) -> str:
    """Two decimals, or three significant digits for small values (an MSE of 0.0009)."""
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def _mean_pm(mean: float, std: float | None) -> str:
    return _number(mean) + (f" ± {_number(std)}" if std is not None else "")


def row_configuration_id(row: dict[str, Any]) -> str:
    return row.get("configuration_id") or configuration_id(row.get("config") or {}, row.get("device"))


def groups(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[dict]]]:
    """ok runs by task, then by configuration id: the seeds of one configuration together."""
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["status"] == "ok":
            out[row["task"]][row_configuration_id(row)].append(row)
    return out


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): json.dumps(value, sort_keys=True, default=str)}


def _distinction(key: str, value: str) -> str:
    shown = json.loads(value)
    if key.startswith("task_config.options."):
        return f"{key.rsplit('.', 1)[1]}={shown}"
    if key == "task_version":
        return f"v{shown}"
    if key == "device":
        return str(shown)
    text = f"{key.rsplit('.', 1)[-1]}={shown}"
    return text if len(text) <= 40 else text[:39] + "…"


def configuration_labels(configs: dict[str, list[dict]]) -> dict[str, str]:
    """Per configuration id: `model budget`, plus what tells it apart from the configurations that
    would otherwise read alike (task options, task version, dropout, device, budget settings)."""
    base = {cid: (runs[0]["cell"], _model(runs[0]), runs[0]["budget"]) for cid, runs in configs.items()}
    flat = {cid: _flat(configuration(runs[0].get("config") or {}, runs[0].get("device"))) for cid, runs in configs.items()}
    labels = {}
    for cid, key in base.items():
        alike = [other for other, k in base.items() if k == key]
        keys = sorted({k for other in alike for k in flat[other]})
        differ = [k for k in keys if len({flat[other].get(k) for other in alike}) > 1 and k in flat[cid]
                  and k not in ("task_config.version", "precision")]  # the same as task_version; its own column
        if any(k.startswith("task_config.options.") or k == "task_version" for k in differ):  # implied by them
            differ = [k for k in differ if k.startswith("task_config.options.") or not k.startswith("task_config.")]
        # the options a budget sets say what it measures (quick's side=14): shown on every row
        config = configs[cid][0].get("config") or {}
        by_budget = [f"task_config.options.{k}" for k in (config.get("budget_config") or {}).get("task_options") or {}]
        differ += [k for k in by_budget if k in flat[cid] and k not in differ]
        labels[cid] = " ".join([f"{key[1]} {key[2]}", *(_distinction(k, flat[cid][k]) for k in differ)])
    return labels


def reached(curve: list[dict[str, float]] | None, target: float, higher_is_better: bool, scale: float) -> float | None:
    """Seconds of training at the first validation whose metric reached `target` (in the shown
    units), None if none did."""
    for point in curve or []:
        value = point["val"] * scale
        if value >= target if higher_is_better else value <= target:
            return point["seconds"]
    return None


def leaderboard(rows: list[dict[str, Any]], targets: dict[str, float] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per task: one entry per configuration with figures over its seeds, best first; the best is
    compared with each other one (Welch's t-test). `targets`: task -> metric value (shown units)
    whose time to reach on validation is read from the runs' learning curves."""
    tables = {}
    for task, configs in sorted(groups(rows).items()):
        labels = configuration_labels(configs)
        body = []
        for cid, runs in configs.items():
            name = runs[0]["metric_name"]
            scale = _scale(name)
            others = sorted({k for r in runs for k in (r["metrics"] or {})} - NOT_SHOWN - {name})
            vals = [r["best_val_metric"] * scale for r in runs if r["best_val_metric"] is not None]
            tokens = [r["tokens_per_s"] for r in runs if r.get("tokens_per_s")]
            values = [r["metric_value"] * scale for r in runs]
            target = (targets or {}).get(task)
            body.append({
                "configuration_id": cid, "cell": runs[0]["cell"], "model": _model(runs[0]), "budget": runs[0]["budget"],
                "precision": runs[0].get("precision") or "-",  # NULL: stored before the option (CPU: 32)
                "label": labels[cid], "metric_name": name, "values": values,
                "metric": mean_ci(values), "std": mean_std(values)[1], "n": len(runs),
                "others": {k: mean_std([r["metrics"][k] * _scale(k) for r in runs if k in r["metrics"]]) for k in others},
                "best_val_mean": statistics.fmean(vals) if vals else None,
                "test_samples": min(r["test_samples"] or 0 for r in runs),
                "train_s": statistics.fmean(r["train_seconds"] for r in runs),
                "step_ms": statistics.median(r["step_ms_median"] for r in runs),
                "samples_per_s": statistics.median(r["samples_per_s"] for r in runs),
                "tokens_per_s": statistics.median(tokens) if tokens else None,
                "peak_memory_bytes": max(r["peak_memory_bytes"] for r in runs),
                "parameters": runs[0]["parameters"],
                "device_share": max(r.get("device_share") or 1 for r in runs),
                "higher_is_better": bool(runs[0]["higher_is_better"]),
                "target": target,
                "to_target": None if target is None else [reached(r.get("curve"), target, bool(r["higher_is_better"]), scale)
                                                          for r in runs],
                "runs": runs,
            })
        body.sort(key=lambda e: -e["metric"][0] if e["higher_is_better"] else e["metric"][0])
        for e in body:
            e["p_vs_best"] = None if e is body[0] else welch_p(body[0]["values"], e["values"])
        tables[task] = body
    return tables


def baselines_for(entries: list[dict[str, Any]], baseline_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The baselines scored on the test split of these runs: same task configuration and budget,
    the options a baseline was stored without (model-only ones, `Task.baseline_config`) left out
    of the comparison."""
    configs = [((r.get("config") or {}).get("task_config") or {}, r["budget"]) for e in entries for r in e["runs"]]
    newest = {}
    for b in baseline_rows:  # stored oldest first
        stored = json.dumps(b["task_config"], sort_keys=True)
        if any(budget == b["budget"] and stored == json.dumps(_with_options(config, b["task_options"]), sort_keys=True)
               for config, budget in configs):
            newest[(b["budget"], json.dumps(b["task_options"], sort_keys=True), b["name"])] = b
    return list(newest.values())


def _with_options(task_config: dict[str, Any], kept: dict[str, Any] | None) -> dict[str, Any]:
    """A run's task configuration with only the options named in `kept`."""
    options = task_config.get("options") or {}
    return {**task_config, "options": {k: v for k, v in options.items() if k in (kept or {})}}


def shared_options(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The task options every run has alike, set ones only (None: the budget's, which its note gives)."""
    options = [((r.get("config") or {}).get("task_config") or {}).get("options") or {} for r in runs]
    first = options[0] if options else {}
    return {k: v for k, v in first.items() if v is not None and all(k in o and o[k] == v for o in options)}


def _options(options: dict[str, Any] | None) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted((options or {}).items()))


def _metric_text(mean: float, half_width: float | None, n: int) -> str:
    return f"{_number(mean)} ± {_number(half_width)}" if half_width is not None else f"{_number(mean)} (n = {n}: no interval)"


def _p_text(e: dict[str, Any], best: dict[str, Any]) -> str:
    if e is best:
        return "best"
    if e["p_vs_best"] is None:
        return "untestable (n < 2)" if min(e["n"], best["n"]) < 2 else "untestable (no spread)"
    return f"{e['p_vs_best']:.2g}" + (" (n.s.)" if e["p_vs_best"] >= 0.05 else "")


def seconds_to_target(e: dict[str, Any]) -> tuple[float | None, int]:
    """Mean seconds to the target over the seeds that reached it (None if none did), and how many did."""
    times = [t for t in e["to_target"] or [] if t is not None]
    return (statistics.fmean(times) if times else None), len(times)


def _to_target_text(e: dict[str, Any]) -> str:
    mean, count = seconds_to_target(e)
    if mean is None:
        return "not reached"
    return f"{mean:.1f}" if count == len(e["to_target"]) else f"{mean:.1f} ({count} of {len(e['to_target'])} seeds)"


def _shared(e: dict[str, Any]) -> str:
    """A timing's note when `--parallel` put other runs on the same device."""
    return f" (device shared by {e['device_share']})" if e["device_share"] > 1 else ""


def task_table(entries: list[dict[str, Any]], baselines: list[dict[str, Any]] = ()) -> tuple[list[str], list[list[str]]]:
    """The header and rows of one task's table: the markdown report and W&B show the same.
    Baselines follow the ranked rows, marked, outside the ranking."""
    name = entries[0]["metric_name"]
    others = sorted({k for e in entries for k in e["others"] if "@" not in k})
    with_tokens = any(e["tokens_per_s"] for e in entries)
    target = entries[0].get("target")
    header = ["cell", "configuration", "precision", f"test {_label(name)}, mean ± 95 % CI", "p vs best (Welch)",
              f"best val {_label(name)}", *[f"test {_label(k)}" for k in others], "n", "test samples",
              *([f"s to val {target:g}"] if target is not None else []), "train s", "step ms", "samples/s",
              *(["tokens/s"] if with_tokens else []), "peak memory", "parameters"]
    body = []
    for e in entries:
        body.append([
            e["cell"], e["label"], e["precision"], _metric_text(*e["metric"], e["n"]), _p_text(e, entries[0]),
            "-" if e["best_val_mean"] is None else _number(e["best_val_mean"]),
            *[_number(e["others"][k][0]) if k in e["others"] else "-" for k in others],
            str(e["n"]), str(e["test_samples"]), *([_to_target_text(e)] if target is not None else []),
            f"{e['train_s']:.1f}" + _shared(e), f"{e['step_ms']:.2f}" + _shared(e),
            f"{e['samples_per_s']:.0f}", *([f"{e['tokens_per_s']:.0f}" if e["tokens_per_s"] else "-"] if with_tokens else []),
            _bytes(e["peak_memory_bytes"]), f"{e['parameters']:,}",
        ])
    for b in baselines:
        metrics = b["metrics"] or {}
        body.append([
            f"baseline: {b['name']}", f"{b['budget']} {_options(b['task_options'])}".strip(), "-",
            _number(b["metric_value"] * _scale(name)), "-", "-",
            *[_number(metrics[k] * _scale(k)) if k in metrics else "-" for k in others],
            "-", str(b["test_samples"]), *["-"] * (5 + with_tokens + (target is not None)),
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
        body = [[e["cell"], e["label"], *[_number(e["others"][k][0]) if k in e["others"] else "-"
                                                               for k in keys]] for e in entries]
        body += [[f"baseline: {b['name']}", b["budget"], *[_number(b["metrics"][k] * _scale(k)) if k in b["metrics"] else "-"
                                                         for k in keys]] for b in baselines]
        out += [f"Test {_label(family)} at each step k (mean over seeds):", "",
                markdown_table(["cell", "configuration", *[str(k) for k in sorted(steps)]], body), ""]
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
            out += [f"**{e['cell']} {e['label']}** (seed {e['runs'][0]['seed']}): {picture['caption']}", "",
                    f"![{e['cell']}]({picture['path']})", ""]
        if artifacts.get("examples"):
            out += [f"**{e['cell']} {e['label']}** (seed {e['runs'][0]['seed']})", ""]
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


def latest_speed(speed_rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """The newest measurement of each (device, shape, precision, cell), grouped by (device, shape,
    precision): timings at different precisions never share a table."""
    newest: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in speed_rows:  # stored oldest first
        newest[(row["device"] or "-", row["shape"], row.get("precision") or "-", row["cell"])] = row
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for (device, shape, precision, _), row in sorted(newest.items()):
        out[(device, shape, precision)].append(row)
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
    for (device, shape, precision), rows in latest_speed(speed_rows).items():
        ok = [r for r in rows if r["status"] == "ok"]
        first = ok[0] if ok else rows[0]
        dims = (f"B={first['shape_batch']} T={first['shape_steps']} I={first['shape_input_size']} "
                f"H={first['shape_hidden_size']} L={first['shape_layers']} D={first['shape_directions']}") if ok else ""
        out += [f"### {shape} on {device}, precision {precision}" + (f" ({dims})" if dims else ""), ""]
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


def render(rows: list[dict[str, Any]], plots: dict[str, list[tuple[str, str]]] | None = None,
           speed_rows: list[dict[str, Any]] | None = None, baseline_rows: list[dict[str, Any]] | None = None,
           targets: dict[str, float] | None = None) -> str:
    """The report's markdown; `plots`: task -> [(picture path, caption)]."""
    plots = plots or {}
    out = ["# rnnbench report", ""]
    if not rows:
        out += ["No runs stored yet: run `rnnbench run ...` first.", ""]
        return "\n".join(out + render_speed(speed_rows or []))
    count = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped")}
    out += [f"{len(rows)} runs stored: {count['ok']} ok, {count['failed']} failed, {count['skipped']} skipped.", ""]
    memory_kinds = sorted({r["memory_kind"] for r in rows if r["status"] == "ok"})
    for task, entries in leaderboard(rows, targets).items():
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
        shared = shared_options([r for e in entries for r in e["runs"]])
        if shared:  # what the runs used where a budget's note says otherwise (e.g. -o dropout=0.3)
            out += [f"Task options of every run: {_options(shared)} (those that differ are in the configuration "
                    "labels; left out: the budget's).", ""]
        for picture, caption in plots.get(task, []):
            out += [f"![{caption}]({picture})", ""]
        out += _examples(entries)
    out += [
        "Rows: one per configuration (everything that defines a run but its seed: task version and options, "
        "cell, model, budget and its settings, devices, device kind); the label adds what tells apart "
        "configurations that would otherwise read alike. Columns: the primary test metric as the mean over the "
        "seeds with the half-width of its 95 % Student-t confidence interval (n seeds); p vs best: two-sided "
        "Welch t-test of the seeds against the best configuration's, `(n.s.)` where p >= 0.05, untestable with "
        "fewer than two seeds on a side; other test metrics as means over the seeds; best validation value; "
        "s to val X: training seconds until validation first reached X (mean over the seeds that did); training "
        "wall time (fit, with validation); median training step time (both marked where `--parallel` ran several "
        "runs on one device at once); training samples (and tokens) per second; "
        "peak memory, which measures: " + "; ".join(memory_kinds) + "; trainable parameters.",
        "",
    ]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        out += ["## Failed and skipped runs", "",
                markdown_table(["task", "cell", "seed", "budget", "status", "error"],
                               [[r["task"], r["cell"], r["seed"], r["budget"], r["status"],
                                 ((r["error"] or "").splitlines() or ["-"])[0][:200]] for r in failed]), ""]
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
    """Test metric (mean, 95 % confidence interval as error bar) against mean training time, one point per
    configuration."""
    fig, ax = figures.pyplot().subplots(figsize=(6, 4), dpi=100)
    for e in entries:
        mean, half_width = e["metric"]
        ax.errorbar(e["train_s"], mean, yerr=half_width or 0, fmt="o", capsize=3, label=f"{e['cell']} {e['label']}")
    name = entries[0]["metric_name"]
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"test {_label(name)}")
    ax.set_title(task)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figures.save(fig, path)


def _curve_lines(e: dict[str, Any], scale: float) -> tuple[list[float], list[float], list[float], list[float], list[float]] | None:
    """Mean over seeds per epoch (the epochs every seed has): epochs, seconds, mean, low, high."""
    curves = [r.get("curve") for r in e["runs"] if r.get("curve")]
    if not curves:
        return None
    length = min(len(c) for c in curves)
    epochs = [curves[0][i]["epoch"] for i in range(length)]
    seconds = [statistics.fmean(c[i]["seconds"] for c in curves) for i in range(length)]
    values = [[c[i]["val"] * scale for c in curves] for i in range(length)]
    return epochs, seconds, [statistics.fmean(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def _two_panels(integer_x: tuple[bool, bool]):
    """Two panels side by side sharing their y axis; an x axis of epochs or time steps gets whole-number ticks."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = figures.pyplot().subplots(1, 2, figsize=(11, 4), dpi=100, sharey=True)
    for ax, integer in zip(axes, integer_x):
        if integer:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


def _save_panels(fig, axes, title: str, path: Path) -> Path:
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    return figures.save(fig, path)


def plot_curves(task: str, entries: list[dict[str, Any]], path: Path) -> Path | None:
    """Validation metric against epoch and against training time, one line per configuration
    (mean over seeds; the band spans the seeds' lowest to highest)."""
    name = entries[0]["metric_name"]
    lines = [(e, _curve_lines(e, _scale(name))) for e in entries]
    lines = [(e, c) for e, c in lines if c]
    if not lines:
        return None
    fig, axes = _two_panels((True, False))
    for e, (epochs, seconds, mean, low, high) in lines:
        for ax, x in zip(axes, (epochs, seconds)):
            (line,) = ax.plot(x, mean, marker="o", markersize=3, label=f"{e['cell']} {e['label']} (n={e['n']})")
            if e["n"] > 1:
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("training time (s)")
    axes[0].set_ylabel(f"validation {_label(name)}")
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save_panels(fig, axes, f"{task}: learning curves", path)


def plot_state_gradients(task: str, entries: list[dict[str, Any]], path: Path) -> Path | None:
    """‖∂L/∂h_t‖ against the time step t, at initialisation and after training, log scale, one line
    per configuration (mean over seeds): how far back in time the loss's gradient reaches."""
    lines = [(e, [r["state_gradients"] for r in e["runs"] if r.get("state_gradients")]) for e in entries]
    lines = [(e, g) for e, g in lines if g]
    if not lines:
        return None
    fig, axes = _two_panels((True, True))
    for e, records in lines:
        for ax, when in zip(axes, ("init", "trained")):
            length = min(len(g[when]) for g in records)
            mean = [statistics.fmean(g[when][t] for g in records) for t in range(length)]
            # exactly zero (below even float64's range) cannot be drawn on a log scale: a gap
            ax.plot(range(1, length + 1), [v if v > 0 else float("nan") for v in mean],
                    label=f"{e['cell']} {e['label']} (n={e['n']})")
    for ax, title in zip(axes, ("at initialisation", "after training")):
        ax.set_yscale("log")
        ax.set_xlabel("time step t")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("‖∂L/∂h_t‖, mean over a fixed test batch")
    return _save_panels(fig, axes, f"{task}: gradient of the loss with respect to the hidden state at each step", path)


def write_report(rows: list[dict[str, Any]], out: Path, speed_rows: list[dict[str, Any]] | None = None,
                 baseline_rows: list[dict[str, Any]] | None = None, targets: dict[str, float] | None = None) -> Path:
    """Write OUT/report.md and the pictures beside it (per task: the metric against training time,
    the learning curves)."""
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, list[tuple[str, str]]] = {}
    for task, entries in leaderboard(rows, targets).items():
        name = entries[0]["metric_name"]
        plot_metric_vs_time(task, entries, out / f"report-{task}.png")
        plots[task] = [(f"report-{task}.png", f"test {name} against training time, {task}")]
        if plot_curves(task, entries, out / f"report-{task}-curves.png"):
            plots[task].append((f"report-{task}-curves.png", f"validation {name} against epoch and time, {task}"))
        if plot_state_gradients(task, entries, out / f"report-{task}-gradients.png"):
            plots[task].append((f"report-{task}-gradients.png", f"gradient norm per time step, {task}: the loss's "
                                "gradient with respect to h_t at each step t (log scale), at initialisation and "
                                "after training"))
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    try:
        tmp.write_text(render(rows, plots, speed_rows, baseline_rows, targets))
        tmp.replace(path)
    except OSError as err:  # a failed write does not say which file
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path
