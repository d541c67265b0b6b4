"""The report's pure functions on hand-made records: configurations, uncertainty, baselines, per-step
metrics, time to target; the export; configuration ids of stores written before they existed."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest

from bench.store import ResultsStore, configuration_id
from reports.export import export
from reports.leaderboard import baselines_for, leaderboard
from reports.markdown import per_step_tables, render, task_table, write_report


def record(cell, seed, mse, per_frame, options, version=2, device="cpu", curve=None):
    return {
        "run_id": f"{cell}{seed}", "task": "video", "cell": cell, "seed": seed, "budget": "quick", "status": "ok",
        "num_layers": 1, "hidden_size": 8, "bidirectional": 0, "devices": 1, "metric_name": "mse",
        "metric_value": mse, "higher_is_better": 0, "best_val_metric": mse, "test_samples": 10,
        "metrics": {"mse": mse, **{f"mse@{k}": v for k, v in enumerate(per_frame, start=1)}},
        "train_seconds": 1.0, "step_ms_median": 1.0, "samples_per_s": 1.0, "tokens_per_s": None,
        "peak_memory_bytes": 1, "memory_kind": "cpu", "parameters": 5, "artifacts": None,
        "config": {"task": "video", "cell": cell, "seed": seed, "task_version": version, "task_config": {"name": "video", "options": options}},
        "environment": {}, "device": device, "git_revision": "x", "curve": curve,
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
    assert lines[2].startswith("| gru ") and lines[3].startswith("| baseline: mean frame | quick frames=conv | - | 150.00 |")
    assert "mse@" not in lines[0], "per-step metrics get their own table, not ten columns"


def test_baselines_stored_without_model_only_options_serve_every_value_of_them():
    rows = [record("gru", 0, 100.0, [90.0] * 10, {"frames": "conv", "frame_step": 1}),
            record("lstm", 0, 110.0, [90.0] * 10, {"frames": "fc", "frame_step": 1})]
    entries = leaderboard(rows)["video"]
    shared = baseline("mean frame", 150.0, {"frame_step": 1})
    other_data = baseline("mean frame", 140.0, {"frame_step": 2})
    assert baselines_for(entries, [shared, other_data]) == [shared]
    lines = [line for line in render(rows, baseline_rows=[shared]).splitlines() if line.startswith("| baseline:")]
    assert lines[0].startswith("| baseline: mean frame | quick frame_step=1 | - | 150.00 |")  # under the runs' table
    assert not any("frames=" in line for line in lines) and len(lines) == 2  # and the per-step table


def test_per_step_metrics_are_one_table_with_a_column_per_step_in_order():
    rows = [record("gru", 0, 100.0, [float(k) for k in range(10)], {}),
            record("gru", 1, 102.0, [float(k + 2) for k in range(10)], {})]
    entries = leaderboard(rows)["video"]
    lines = per_step_tables(entries, [baseline("mean frame", 150.0, {})])
    table = [line for line in "\n".join(lines).splitlines() if line.startswith("| ")]
    assert table[0] == "| cell | configuration | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 |"
    assert table[2].startswith("| gru | 1x8 quick | 1.00 | 2.00 | 3.00 ")  # mean over the two seeds
    assert table[3].startswith("| baseline: mean frame | quick | 151.00 | 152.00 ")


def metric_cells(rows, target=None):
    entries = leaderboard(rows, {"video": target} if target is not None else None)["video"]
    header, body = task_table(entries)
    return entries, [dict(zip(header, line)) for line in body]


def test_configurations_that_differ_are_not_averaged_and_their_labels_say_how():
    rows = [record("gru", s, 100.0 + s, [0.0] * 10, {"frames": "conv"}) for s in range(2)]
    rows += [record("gru", 0, 150.0, [0.0] * 10, {"frames": "fc"})]
    rows += [record("gru", 0, 120.0, [0.0] * 10, {"frames": "conv"}, version=1)]
    rows += [record("gru", 0, 90.0, [0.0] * 10, {"frames": "conv"}, device="cuda: NVIDIA H200")]
    entries, cells = metric_cells(rows)
    assert [(e["n"], e["metric"][0]) for e in entries] == [(1, 90.0), (2, 100.5), (1, 120.0), (1, 150.0)]
    labels = [c["configuration"] for c in cells]
    assert labels == ["1x8 quick cuda: NVIDIA H200 frames=conv v2", "1x8 quick cpu frames=conv v2",
                      "1x8 quick cpu frames=conv v1", "1x8 quick cpu frames=fc v2"]
    assert len({e["configuration_id"] for e in entries}) == 4
    # options every run has alike are named once under the table (None: the budget's, left out)
    for r in rows:
        r["config"]["task_config"]["options"] |= {"dropout": 0.1, "beam": None}
    text = render(rows)
    assert "Task options of every run: dropout=0.1 (those that differ" in text and "beam=" not in text
    rows[0]["config"]["task_config"]["options"]["dropout"] = 0.3
    assert "Task options of every run" not in render(rows)


def test_mean_with_a_95_percent_interval_and_welch_against_the_best():
    rows = [record("lstm", s, v, [0.0] * 10, {}) for s, v in enumerate([1.0, 2.0, 3.0])]
    rows += [record("gru", s, v, [0.0] * 10, {}) for s, v in enumerate([4.0, 5.0, 6.0])]
    rows += [record("rnn", s, v, [0.0] * 10, {}) for s, v in enumerate([1.5, 2.5, 2.0])]
    rows += [record("tanh", 0, 7.0, [0.0] * 10, {})]
    entries, cells = metric_cells(rows)  # MSE: lower is better
    assert [e["cell"] for e in entries] == ["lstm", "rnn", "gru", "tanh"]
    # t(0.975, 2) = 4.3027 (tables); half-width = 4.3027 * 1 / sqrt(3)
    assert entries[0]["metric"][1] == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-5)
    assert cells[0]["test mse, mean ± 95 % CI"] == "2.00 ± 2.48" and cells[0]["p vs best (Welch)"] == "best"
    # Welch between [1, 2, 3] and [4, 5, 6]: t = -3.674, 4 degrees of freedom, p = 0.0213
    assert entries[2]["p_vs_best"] == pytest.approx(0.02131, abs=1e-4)
    assert cells[2]["p vs best (Welch)"] == "0.021"
    assert cells[1]["p vs best (Welch)"].endswith("(n.s.)")  # [1.5, 2.5, 2] is no different from [1, 2, 3]
    assert cells[3]["test mse, mean ± 95 % CI"] == "7.00 (n = 1: no interval)"
    assert cells[3]["p vs best (Welch)"] == "untestable (n < 2)"


def test_time_to_target_is_read_from_the_curves():
    curve = lambda vals: [{"epoch": i + 1, "val": v, "train_loss": 0.0, "seconds": 10.0 * (i + 1)}  # noqa: E731
                          for i, v in enumerate(vals)]
    rows = [record("gru", 0, 1.0, [0.0] * 10, {}, curve=curve([200, 130, 120])),
            record("gru", 1, 1.0, [0.0] * 10, {}, curve=curve([200, 160, 135])),
            record("lstm", 0, 2.0, [0.0] * 10, {}, curve=curve([200, 150, 140]))]
    _, cells = metric_cells(rows, target=138.0)
    assert cells[0]["s to val 138"] == "25.0" and cells[1]["s to val 138"] == "not reached"
    rows[1]["curve"] = curve([200, 160, 150])
    _, cells = metric_cells(rows, target=138.0)
    assert cells[0]["s to val 138"] == "20.0 (1 of 2 seeds)"
    _, cells = metric_cells(rows)
    assert not any(k.startswith("s to val") for k in cells[0])


def test_report_draws_learning_curves_and_state_gradients(tmp_path):
    curve = [{"epoch": e, "val": 1.0 / e, "train_loss": 1.0, "seconds": 5.0 * e} for e in (1, 2, 3)]
    rows = [record("gru", s, 1.0, [0.0] * 10, {}, curve=curve) for s in range(2)]
    for r in rows:
        r["state_gradients"] = {"init": [1e-120, 1e-3, 1.0], "trained": [0.0, 0.1, 1.0], "samples": 4}
    text = (write_report(rows, tmp_path)).read_text()
    for picture in ("report-video.png", "report-video-curves.png", "report-video-gradients.png"):
        assert f"]({picture})" in text and (tmp_path / picture).stat().st_size > 10_000


def test_epoch_and_time_step_axes_tick_whole_numbers(tmp_path, monkeypatch):
    """Three epochs drawn would otherwise get ticks at 1.25, 1.5, ...; the time axes keep theirs."""
    from reports import figures

    ticks, save = {}, figures.save

    def recording(fig, path, **layout):
        fig.canvas.draw()
        ticks[path.name] = [[float(t) for t in ax.get_xticks()] for ax in fig.axes]
        return save(fig, path, **layout)

    monkeypatch.setattr(figures, "save", recording)
    curve = [{"epoch": e, "val": 1.0 / e, "train_loss": 1.0, "seconds": 0.7 * e} for e in (1, 2, 3)]
    rows = [record("gru", 0, 1.0, [0.0] * 10, {}, curve=curve)]
    rows[0]["state_gradients"] = {"init": [1e-3, 1e-2, 1.0], "trained": [0.1, 0.5, 1.0], "samples": 4}
    write_report(rows, tmp_path)
    whole = lambda values: all(v == int(v) for v in values)  # noqa: E731
    (epochs, seconds), (steps_init, steps_trained) = ticks["report-video-curves.png"], ticks["report-video-gradients.png"]
    assert whole(epochs) and whole(steps_init) and whole(steps_trained)
    assert not whole(seconds), "training seconds 0.7 to 2.1 keep fractional ticks"


def test_stores_from_before_configuration_ids_gain_them_when_opened(tmp_path):
    row = record("gru", 0, 100.0, [0.0] * 10, {"frames": "conv"})
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, task TEXT NOT NULL, task_version INTEGER NOT NULL, "
                   "cell TEXT NOT NULL, seed INTEGER NOT NULL, budget TEXT NOT NULL, status TEXT NOT NULL, "
                   "config TEXT, device TEXT)")
        db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   ("r0", "video", 2, "gru", 0, "quick", "ok", json.dumps(row["config"]), "cpu"))
    (stored,) = ResultsStore(tmp_path).rows()
    assert stored["configuration_id"] == configuration_id(row["config"], "cpu")
    other = {**row["config"], "seed": 5}  # the seed is not part of a configuration
    assert configuration_id(other, "cpu") == stored["configuration_id"] != configuration_id(row["config"], "cuda")


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_writes_every_row_and_one_grouped_row_per_configuration(tmp_path, fmt):
    rows = [record("gru", s, 100.0 + s, [0.0] * 10, {}) for s in range(3)] + [record("lstm", 0, 90.0, [0.0] * 10, {})]
    raw, grouped = export({"runs": rows}, "runs", fmt, tmp_path)
    if fmt == "csv":
        with raw.open() as f:
            raw_rows = list(csv.DictReader(f))
        with grouped.open() as f:
            grouped_rows = list(csv.DictReader(f))
        assert json.loads(raw_rows[0]["metrics"])["mse"] == 100.0
    else:
        raw_rows, grouped_rows = json.loads(raw.read_text()), json.loads(grouped.read_text())
    assert len(raw_rows) == 4 and [r["cell"] for r in grouped_rows] == ["lstm", "gru"]
    gru = grouped_rows[1]
    assert float(gru["mean"]) == pytest.approx(101.0) and int(gru["n"]) == 3
    assert float(gru["ci95_half_width"]) == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-5)
    with pytest.raises(ValueError, match="format must be one of csv, json"):
        export({"runs": rows}, "runs", "xlsx", tmp_path)


def test_published_results_follow_the_runs_of_their_protocol_marked_and_unranked():
    from bench.cli import published
    from reports.leaderboard import published_for

    declared = published()
    pixel = {p["model"]: p for p in declared["mnist-pixel"]}
    assert pixel["GRU"]["value"] == 96.2 and pixel["LSTM"]["budget"] == "paper" and "Bai" in pixel["LSTM"]["citation"]
    assert {p["model"]: p["value"] for p in declared["mnist-permuted"]} == {"LSTM": 85.7, "GRU": 87.3, "tanh RNN": 25.3}

    def run(budget, side):
        row = record("gru_fused", 0, 0.9, [], {"side": side})
        row.update(task="mnist-pixel", budget=budget, metric_name="accuracy", higher_is_better=1, best_val_metric=0.9,
                   metrics={"accuracy": 0.9})
        return row

    paper, quick = [run("paper", 28)], [run("quick", 14)]
    assert published_for(leaderboard(quick)["mnist-pixel"], declared["mnist-pixel"]) == []
    assert published_for(leaderboard([run("paper", 14)])["mnist-pixel"], declared["mnist-pixel"]) == []
    text = render(paper, published=declared)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[2].startswith("| gru_fused ") and "| 90.00 |" in lines[2]  # ranked, in percent
    assert lines[3].startswith("| published: LSTM | paper side=28 | - | 87.20 |")
    assert lines[4].startswith("| published: GRU | paper side=28 | - | 96.20 |")
    assert lines[5].startswith("| published: tanh RNN | paper side=28 | - | 21.50 |") and lines[6].startswith("| device ")
    assert "Published results of the same protocol (rows marked `published:`, not ranked): LSTM: Bai" in text
    assert "published:" not in render(quick, published=declared)
