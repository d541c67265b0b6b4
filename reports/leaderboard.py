"""The leaderboard: stored run records grouped into configurations, with their figures over the
seeds (means, confidence intervals, Welch tests, time to a target) and the baselines that share their
test split. The one API that the markdown report, the export and W&B read (no torch, no plotting).

    entries = leaderboard(ResultsStore(out).rows())["mnist-row"]   # best first
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import Any

from reports.rows import configuration, configuration_id

PERCENT_METRICS = {"accuracy", "miou", "pixel_accuracy", "no_eos"}  # stored as fractions, shown as %
UNITS = {"nll": "nats"}  # the units of metrics stored as they are shown
NOT_SHOWN = {"loss", "samples"}  # test metrics kept in the store but not in the tables


def model_text(row: dict[str, Any]) -> str:
    text = f"{row['num_layers']}x{row['hidden_size']}" + (" bi" if row["bidirectional"] else "")
    text += f" {row['devices']} dev" if (row.get("devices") or 1) > 1 else ""
    return text + (f" x {row['nodes']} nodes" if (row.get("nodes") or 1) > 1 else "")


def unit_scale(name: str) -> float:
    return 100.0 if name in PERCENT_METRICS else 1.0


def unit_label(name: str) -> str:
    unit = "%" if name in PERCENT_METRICS else UNITS.get(name)
    return f"{name} ({unit})" if unit else name


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
    base = {cid: (runs[0]["cell"], model_text(runs[0]), runs[0]["budget"]) for cid, runs in configs.items()}
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
            scale = unit_scale(name)
            others = sorted({k for r in runs for k in (r["metrics"] or {})} - NOT_SHOWN - {name})
            vals = [r["best_val_metric"] * scale for r in runs if r["best_val_metric"] is not None]
            tokens = [r["tokens_per_s"] for r in runs if r.get("tokens_per_s")]
            values = [r["metric_value"] * scale for r in runs]
            target = (targets or {}).get(task)
            body.append({
                "configuration_id": cid, "cell": runs[0]["cell"], "model": model_text(runs[0]), "budget": runs[0]["budget"],
                "precision": runs[0].get("precision") or "-",  # NULL: stored before the option (CPU: 32)
                "label": labels[cid], "metric_name": name, "values": values,
                "metric": mean_ci(values), "std": mean_std(values)[1], "n": len(runs),
                "others": {k: mean_std([r["metrics"][k] * unit_scale(k) for r in runs if k in r["metrics"]]) for k in others},
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


def seconds_to_target(e: dict[str, Any]) -> tuple[float | None, int]:
    """Mean seconds to the target over the seeds that reached it (None if none did), and how many did."""
    times = [t for t in e["to_target"] or [] if t is not None]
    return (statistics.fmean(times) if times else None), len(times)


def published_for(entries: list[dict[str, Any]], published: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The task's published results whose protocol some of these runs follow: the same budget, and
    the option values the result names (`Published.row()` of the task's declarations)."""
    runs = [((r.get("config") or {}).get("task_config") or {}, r["budget"]) for e in entries for r in e["runs"]]
    return [p for p in published
            if any(p["budget"] in (None, budget) and all((config.get("options") or {}).get(k) == v
                                                 for k, v in p["options"].items()) for config, budget in runs)]
