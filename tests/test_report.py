"""The report's pure functions on hand-made records: baselines and per-step metrics."""

from __future__ import annotations

from reports.markdown import baselines_for, leaderboard, per_step_tables, render


def record(cell, seed, mse, per_frame, options):
    return {
        "run_id": f"{cell}{seed}", "task": "video", "cell": cell, "seed": seed, "budget": "quick", "status": "ok",
        "num_layers": 1, "hidden_size": 8, "bidirectional": 0, "devices": 1, "metric_name": "mse",
        "metric_value": mse, "higher_is_better": 0, "best_val_metric": mse, "test_samples": 10,
        "metrics": {"mse": mse, **{f"mse@{k}": v for k, v in enumerate(per_frame, start=1)}},
        "train_seconds": 1.0, "step_ms_median": 1.0, "samples_per_s": 1.0, "tokens_per_s": None,
        "peak_memory_bytes": 1, "memory_kind": "cpu", "parameters": 5, "artifacts": None,
        "config": {"task_config": {"name": "video", "options": options}}, "environment": {}, "device": "cpu",
        "git_revision": "x",
    }


def baseline(name, value, options, budget="quick"):
    return {"name": name, "description": f"{name} always", "budget": budget, "task_options": options,
            "task_config": {"name": "video", "options": options}, "metric_value": value,
            "metrics": {"mse": value, **{f"mse@{k}": value + k for k in range(1, 11)}}, "test_samples": 10}


def test_baselines_of_the_runs_configuration_only_follow_the_table():
    rows = [record("gru", 0, 100.0, [90.0 + k for k in range(10)], {"frames": "conv"})]
    entries = leaderboard(rows)["video"]
    mine = baseline("mean frame", 150.0, {"frames": "conv"})
    assert baselines_for(entries, [mine, baseline("mean frame", 1.0, {"frames": "fc"}),
                                   baseline("mean frame", 2.0, {"frames": "conv"}, budget="paper")]) == [mine]
    text = render(rows, baseline_rows=[mine])
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[2].startswith("| gru ") and lines[3].startswith("| baseline: mean frame | quick frames=conv | 150.00 |")
    assert "mse@" not in lines[0], "per-step metrics get their own table, not ten columns"


def test_per_step_metrics_are_one_table_with_a_column_per_step_in_order():
    rows = [record("gru", 0, 100.0, [float(k) for k in range(10)], {}),
            record("gru", 1, 102.0, [float(k + 2) for k in range(10)], {})]
    entries = leaderboard(rows)["video"]
    lines = per_step_tables(entries, [baseline("mean frame", 150.0, {})])
    table = [line for line in "\n".join(lines).splitlines() if line.startswith("| ")]
    assert table[0] == "| cell | model | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 |"
    assert table[2].startswith("| gru | 1x8 quick | 1.00 | 2.00 | 3.00 ")  # mean over the two seeds
    assert table[3].startswith("| baseline: mean frame | quick | 151.00 | 152.00 ")
