"""The markdown report: the leaderboard's tables, baselines, examples, speed and environment as
markdown, and `write_report`, which writes it with its pictures (no torch).

    rows = ResultsStore(out).rows()
    text = render(rows, plots={"mnist-row": [("report-mnist-row.png", "caption")]})
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from reports.leaderboard import (baselines_for, leaderboard, published_for, seconds_to_target, shared_options,
                                 unit_label, unit_scale)
from reports.plots import plot_curves, plot_metric_vs_time, plot_state_gradients


def _bytes(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.2f} MiB"


def _number(value: float) -> str:
    """Two decimals, or three significant digits for small values (an MSE of 0.0009)."""
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


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


def _to_target_text(e: dict[str, Any]) -> str:
    mean, count = seconds_to_target(e)
    if mean is None:
        return "not reached"
    return f"{mean:.1f}" if count == len(e["to_target"]) else f"{mean:.1f} ({count} of {len(e['to_target'])} seeds)"


def _shared(e: dict[str, Any]) -> str:
    """A timing's note when `--parallel` put other runs on the same device."""
    return f" (device shared by {e['device_share']})" if e["device_share"] > 1 else ""


def task_table(entries: list[dict[str, Any]], baselines: list[dict[str, Any]] = (),
               published: list[dict[str, Any]] = ()) -> tuple[list[str], list[list[str]]]:
    """The header and rows of one task's table: the markdown report and W&B show the same.
    Baselines and published results follow the ranked rows, marked, outside the ranking."""
    name = entries[0]["metric_name"]
    others = sorted({k for e in entries for k in e["others"] if "@" not in k})
    with_tokens = any(e["tokens_per_s"] for e in entries)
    target = entries[0].get("target")
    header = ["cell", "configuration", "precision", f"test {unit_label(name)}, mean ± 95 % CI", "p vs best (Welch)",
              f"best val {unit_label(name)}", *[f"test {unit_label(k)}" for k in others], "n", "test samples",
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
            _number(b["metric_value"] * unit_scale(name)), "-", "-",
            *[_number(metrics[k] * unit_scale(k)) if k in metrics else "-" for k in others],
            "-", str(b["test_samples"]), *["-"] * (5 + with_tokens + (target is not None)),
        ])
    for p in published:
        protocol = "its own" if p["budget"] is None else f"{p['budget']} {_options(p['options'])}".strip()
        body.append([f"published: {p['model']}", protocol, "-",
                     _number(p["value"]), "-", "-", *["-"] * len(others), "-", "-",
                     *["-"] * (5 + with_tokens + (target is not None))])
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
        body += [[f"baseline: {b['name']}", b["budget"], *[_number(b["metrics"][k] * unit_scale(k)) if k in b["metrics"] else "-"
                                                         for k in keys]] for b in baselines]
        out += [f"Test {unit_label(family)} at each step k (mean over seeds):", "",
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
    out, samples = [], []
    for e in entries:
        artifacts = e["runs"][0].get("artifacts") or {}
        for picture in artifacts.get("pictures", []):  # paths relative to the results folder
            # drawn from the network rather than shown for test inputs: a heading of their own
            kept = samples if picture.get("sampled") else out
            kept += [f"**{e['cell']} {e['label']}** (seed {e['runs'][0]['seed']}): {picture['caption']}", "",
                     f"![{e['cell']}]({picture['path']})", ""]
        if artifacts.get("examples"):
            out += [f"**{e['cell']} {e['label']}** (seed {e['runs'][0]['seed']})", ""]
            out += [markdown_table(["source", "reference", "output"],
                                   [[x["source"], x["reference"], x["hypothesis"]] for x in artifacts["examples"]]), ""]
    if out:
        out = ["### Examples from the test set", ""] + out
    if samples:
        out += ["### Samples drawn from the tested networks", ""] + samples
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
        if first.get("shape_scan"):
            dims = (f"B={first['shape_batch']} image {first['shape_steps']}x{first['shape_steps']} "
                    f"C={first['shape_input_size']} H={first['shape_hidden_size']} {first['shape_scan']} scan")
        else:
            dims = (f"B={first['shape_batch']} T={first['shape_steps']} I={first['shape_input_size']} "
                    f"H={first['shape_hidden_size']} L={first['shape_layers']} D={first['shape_directions']}")
        dims = dims if ok else ""
        counted = any(r.get("parameters") is not None for r in ok)  # measured by rnnbench since it counts them
        out += [f"### {shape} on {device}, precision {precision}" + (f" ({dims})" if dims else ""), ""]
        body = []
        for r in sorted(ok, key=lambda r: (r["architecture"], r["twin"] is not None, r["cell"])):
            body.append([r["cell"], f"{r['forward_ms']:.2f} ± {r['forward_ms_iqr']:.2f}",
                         f"{r['forward_backward_ms']:.2f} ± {r['forward_backward_ms_iqr']:.2f}",
                         "-" if r["ratio_to_fused"] is None else f"{r['ratio_to_fused']:.2f}",
                         "-" if r.get("floor_forward_backward_ms") is None else f"{r['floor_forward_backward_ms']:.2f}",
                         f"{r['tokens_per_s']:.0f}",
                         "-" if r["flops_per_s"] is None else
                         f"{r['flops_per_s'] / 1e9:.1f} ({100 * r['flops_per_s'] / r['peak_flops_per_s']:.1f} %)",
                         f"{r['first_call_s']:.2f}", _bytes(r["memory_bytes"]),
                         *([f"{r['parameters']:,}" if r.get("parameters") is not None else "-"] if counted else [])])
        if body:
            out += [markdown_table(["cell", "fwd ms", "fwd+bwd ms", "vs fused", "matmul floor ms", "tokens/s",
                                    "GFLOP/s (of peak)",
                                    "first call s", "memory", *(["parameters"] if counted else [])], body), ""]
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
           targets: dict[str, float] | None = None, published: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """The report's markdown; `plots`: task -> [(picture path, caption)]; `published`: task -> the
    published results it declares (`Published.row()`)."""
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
        cited = published_for(entries, (published or {}).get(task, []))
        out += [f"## {task}", "", markdown_table(*task_table(entries, baselines, cited)), ""]
        out += per_step_tables(entries, baselines)
        if baselines:
            out += ["Baselines (rows marked `baseline:`, not ranked): " + "; ".join(
                f"{b['name']}: {b['description']}" for b in baselines) + ".", ""]
        same = [p for p in cited if p["budget"] is not None]
        if same:
            out += ["Published results of the same protocol (rows marked `published:`, not ranked): " + "; ".join(
                f"{p['model']}: {p['citation']}" for p in same) + ".", ""]
        own = [p for p in cited if p["budget"] is None]
        if own:
            out += ["Published results of models and training of their own, for scale (rows marked `published:`, "
                    "not ranked): " + "; ".join(f"{p['model']}: {p['citation']}" for p in own) + ".", ""]
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


def write_report(rows: list[dict[str, Any]], out: Path, speed_rows: list[dict[str, Any]] | None = None,
                 baseline_rows: list[dict[str, Any]] | None = None, targets: dict[str, float] | None = None,
                 published: dict[str, list[dict[str, Any]]] | None = None) -> Path:
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
        tmp.write_text(render(rows, plots, speed_rows, baseline_rows, targets, published))
        tmp.replace(path)
    except OSError as err:  # a failed write does not say which file
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)
    return path
