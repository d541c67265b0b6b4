"""`rnnbench speed`: the timing discipline, the FLOP count, the store and the report."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.speed import (
    MatmulFloor,
    Shape,
    Timer,
    matmul_flops,
    median_iqr,
    parse_shape,
    peak_matmul_flops,
    training_matmul_flops,
)
from bench.store import ResultsStore

runner = CliRunner()


class FakeClock:
    """A clock that advances only when the timed function runs, and a log of what happened."""

    def __init__(self):
        self.now, self.log = 0.0, []

    def clock(self):
        self.log.append("clock")
        return self.now

    def sync(self):
        self.log.append("sync")

    def work(self, seconds):
        def fn():
            self.log.append("call")
            self.now += seconds
        return fn


def test_timer_warms_up_then_times_each_call_between_synchronisations():
    fake = FakeClock()
    timer = Timer(torch.device("cpu"), clock=fake.clock, sync=fake.sync)
    durations = iter([5.0, 5.0, 1.0, 2.0, 3.0])  # two slow warm-up calls, then three timed ones

    def fn():
        fake.log.append("call")
        fake.now += next(durations)

    samples = timer(fn, warmup=2, repeats=3)
    assert samples == [1.0, 2.0, 3.0], "warm-up calls must not be timed"
    assert fake.log[:2] == ["call", "call"]
    timed = fake.log[2:]
    assert timed == ["sync", "clock", "call", "sync", "clock"] * 3, "each timed call is synchronised on both sides"
    assert median_iqr(samples) == (2.0, 2.0)  # quartiles of 1, 2, 3 (exclusive method): 1 and 3


def test_interleaved_timing_takes_one_call_of_each_function_per_round():
    fake = FakeClock()
    timer = Timer(torch.device("cpu"), clock=fake.clock, sync=fake.sync)

    def work(tag, seconds):
        def fn():
            fake.log.append(tag)
            fake.now += seconds
        return fn

    samples = timer.interleaved([work("a", 1.0), work("b", 2.0)], warmup=2, repeats=3)
    assert samples == [[1.0] * 3, [2.0] * 3]
    calls = [entry for entry in fake.log if entry in ("a", "b")]
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3, "warm-up each, then one call of each per round"
    assert fake.log[4:9] == ["sync", "clock", "a", "sync", "clock"]


def test_peak_is_the_fastest_call_after_warming_up():
    fake = FakeClock()
    timer = Timer(torch.device("cpu"), clock=fake.clock, sync=fake.sync)
    durations = iter([0.2] * 3 + [0.1, 0.05, 0.08])  # first call, two more to fill 0.5 s of warm-up, then timed

    real_matmul = torch.Tensor.__matmul__

    def slow_matmul(a, b):
        fake.log.append("call")
        fake.now += next(durations)
        return real_matmul(a, b)

    torch.Tensor.__matmul__ = slow_matmul
    try:
        peak = peak_matmul_flops(torch.device("cpu"), timer, size=8, repeats=3, warmup_s=0.5)
    finally:
        torch.Tensor.__matmul__ = real_matmul
    assert fake.log.count("call") == 6
    assert peak == pytest.approx(2 * 8**3 / 0.05)


def test_first_call_is_timed_alone():
    fake = FakeClock()
    timer = Timer(torch.device("cpu"), clock=fake.clock, sync=fake.sync)
    assert timer.once(fake.work(7.5)) == 7.5
    assert fake.log == ["sync", "clock", "call", "sync", "clock"]


def test_flop_count_matches_a_hand_count():
    # LSTM, B=2, T=3, I=4, H=5: per step 2*B*(I*4H) + 2*B*(H*4H) = 2*2*(80 + 100) = 720; 3 steps: 2160
    assert matmul_flops(Shape("s", 2, 3, 4, 5), "LSTM") == 2160
    # GRU, 2 layers, bidirectional: layer 0: 2 dirs * 2*2*3*(4*15 + 5*15) = 3240;
    # layer 1 reads 2H = 10 features: 2 dirs * 2*2*3*(10*15 + 75) = 5400
    assert matmul_flops(Shape("s", 2, 3, 4, 5, layers=2, directions=2), "GRU") == 3240 + 5400
    assert matmul_flops(Shape("s", 1, 1, 1, 1), "RNN") == 4


def test_flop_count_matches_the_profiler():
    """The count equals the FLOPs torch's profiler attributes to the matmuls of a forward pass."""
    from torch.profiler import ProfilerActivity, profile

    from cells import build_cell

    cell = build_cell("lstm_handwritten", 4, 5)
    x = torch.randn(2, 3, 4)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        cell(x)
    counted = sum(e.flops for e in prof.key_averages() if e.key in ("aten::addmm", "aten::mm", "aten::matmul", "aten::linear"))
    assert counted == matmul_flops(Shape("s", 2, 3, 4, 5), "LSTM")


def profiled_matmul_flops(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        fn()
    return sum(e.flops for e in prof.key_averages() if e.key in ("aten::addmm", "aten::mm", "aten::matmul", "aten::linear"))


@pytest.mark.parametrize("architecture", ["RNN", "LSTM", "GRU"])
def test_training_flops_and_the_matmul_floor_match_what_a_hand_written_cell_does(architecture):
    """Forward+backward of a hand-written cell (input needing no gradient), the count, and the
    matmul floor's calls: the same matmul FLOPs by the profiler's count."""
    from cells import build_cell

    shape = Shape("s", 3, 4, 5, 6, layers=2, directions=2)
    cell = build_cell(f"{architecture.lower()}_handwritten", 5, 6, num_layers=2, bidirectional=True)
    x = torch.randn(3, 4, 5)

    def step():
        out, _ = cell(x)
        out.sum().backward()

    assert profiled_matmul_flops(step) == training_matmul_flops(shape, architecture)
    floor = MatmulFloor(architecture, shape, torch.device("cpu"))
    assert profiled_matmul_flops(floor.forward_backward) == training_matmul_flops(shape, architecture)
    assert profiled_matmul_flops(floor.forward) == matmul_flops(shape, architecture)


@pytest.mark.parametrize("text, message", [
    ("huge", "shape must be one of mnist-row"),
    ("64,28,28", "B,T,I,H"),
    ("64,28,0,128", "positive integers"),
    ("64,28,28,128,1,3", "D in 1, 2"),
])
def test_bad_shapes(text, message):
    with pytest.raises(ValueError, match=message):
        parse_shape(text)
    assert parse_shape("8,5,3,4,2,2") == Shape("8,5,3,4,2,2", 8, 5, 3, 4, 2, 2)


def test_speed_command_stores_rows_with_ratios_and_reports_them(tmp_path):
    result = runner.invoke(app, ["speed", "--cell", "gru_handwritten", "--cell", "rnn_fused", "--shape", "8,6,3,16",
                                 "--repeats", "3", "--warmup", "1", "--out", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "  setting up gru_fused at 8,6,3,16 ..." in result.output  # progress, cell by cell
    assert ("  timing gru_handwritten, rnn_fused, gru_fused, matmul floor (GRU), matmul floor (RNN) at 8,6,3,16 "
            "in turn") in result.output
    rows = ResultsStore(tmp_path).rows("speed")
    by_cell = {r["cell"]: r for r in rows}
    assert set(by_cell) == {"gru_handwritten", "gru_fused", "rnn_fused"}  # the twin is measured too
    assert len({r["session"] for r in rows}) == 1
    hand, fused = by_cell["gru_handwritten"], by_cell["gru_fused"]
    assert hand["ratio_to_fused"] == pytest.approx(hand["forward_backward_ms"] / fused["forward_backward_ms"])
    assert fused["ratio_to_fused"] == 1.0
    for row in rows:
        assert row["status"] == "ok" and row["device"].startswith("cpu")
        assert 0 < row["forward_ms"] and 0 < row["forward_backward_ms"] and row["first_call_s"] > 0
        assert row["memory_bytes"] > 0 and row["memory_kind"] == "cpu: bytes saved for backward"
        assert row["tokens_per_s"] == pytest.approx(8 * 6 / (row["forward_backward_ms"] / 1e3))
        assert row["peak_flops_per_s"] > 0 and row["repeats"] == 3 and row["precision"] == "32"
    report = (tmp_path / "report.md").read_text()
    assert "## Speed of the cells" in report and "### 8,6,3,16 on cpu" in report and ", precision 32 (B=8 T=6" in report and "gru_handwritten" in report


def test_speed_times_the_two_dimensional_scans_once_per_gating_with_their_parameters(tmp_path):
    from cells.scan2d import DiagonalBiScan, RowScan

    result = runner.invoke(app, ["speed", "--cell", "lstm_fused", "--cell", "lstm_handwritten", "--cell", "gru_fused",
                                 "--shape", "mnist-scan-row", "--shape", "mnist-scan-diagonal", "--repeats", "2",
                                 "--warmup", "1", "--out", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = ResultsStore(tmp_path).rows("speed")
    assert sorted((r["shape"], r["cell"]) for r in rows) == [
        ("mnist-scan-diagonal", "gru_fused"), ("mnist-scan-diagonal", "lstm_fused"),
        ("mnist-scan-row", "gru_fused"), ("mnist-scan-row", "lstm_fused")]  # lstm_handwritten's scan is lstm_fused's
    expected = {"row": lambda cell: RowScan(cell, 1, 32), "diagonal": lambda cell: DiagonalBiScan(cell, 1, 16)}
    for row in rows:
        assert row["status"] == "ok" and row["shape_scan"] in expected
        assert row["parameters"] == sum(p.numel() for p in expected[row["shape_scan"]](row["cell"]).parameters())
        assert row["floor_forward_backward_ms"] is None and row["flops_per_s"] is None and row["ratio_to_fused"] is None
        assert row["tokens_per_s"] == pytest.approx(64 * 28 * 28 / (row["forward_backward_ms"] / 1e3))  # pixels
        assert 0 < row["forward_ms"] < row["forward_backward_ms"] and row["memory_bytes"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "(B=64 image 28x28 C=1 H=32 row scan)" in report and "| parameters |" in report


def test_speed_on_cuda_without_a_gpu_is_skipped_with_the_reason(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("needs CUDA to be absent: this machine has a GPU")
    result = runner.invoke(app, ["speed", "--device", "cuda", "--cell", "lstm_fused", "--out", str(tmp_path)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = ResultsStore(tmp_path).rows("speed")
    assert rows and all(r["status"] == "skipped" and "no CUDA device" in r["error"] for r in rows)
    assert {r["shape"] for r in rows} >= {"fastrnns", "deepbench-h1024-b64-t25"}


def test_speed_errors_name_the_input(tmp_path):
    result = runner.invoke(app, ["speed", "--cell", "lstm_fsued", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Did you mean 'lstm_fused'" in result.output
    result = runner.invoke(app, ["speed", "--shape-set", "tpu", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--shape-set must be one of cpu, mnist, scans, gpu" in result.output
    result = runner.invoke(app, ["speed", "--repeats", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--repeats >= 1" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: times with CUDA events and reads the allocator peak")
def test_speed_on_cuda_uses_events_and_the_allocator_peak(tmp_path):
    result = runner.invoke(app, ["speed", "--device", "cuda", "--cell", "lstm_handwritten", "--shape", "8,6,3,16",
                                 "--repeats", "3", "--warmup", "1", "--out", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = ResultsStore(tmp_path).rows("speed")
    assert {r["cell"] for r in rows} == {"lstm_handwritten", "lstm_fused"}
    for row in rows:
        assert row["status"] == "ok" and row["device"].startswith("cuda: ")
        assert row["memory_kind"] == "cuda allocator peak" and row["memory_bytes"] > 0


def test_speed_keeps_freed_memory_before_it_times_anything(tmp_path, monkeypatch):
    """As every run's process does (`bench/allocator.py`): the peak matmul, the first thing timed,
    already finds malloc keeping freed memory, and the rows' environment says so."""
    import bench.speed
    from bench.allocator import keep_freed_memory

    keep_freed_memory.cache_clear()
    seen = []
    peak = bench.speed.peak_matmul_flops
    monkeypatch.setattr(bench.speed, "peak_matmul_flops",
                        lambda *a, **k: seen.append(keep_freed_memory.cache_info().currsize) or peak(*a, **k))
    rows = bench.speed.run_speed(["rnn_fused"], [parse_shape("4,3,2,5")], "cpu", ResultsStore(tmp_path),
                                 warmup=1, repeats=2)
    assert seen == [1], "malloc set before the peak matmul is timed"
    glibc = keep_freed_memory()
    assert rows[0]["environment"]["malloc"] == ("glibc, freed memory kept" if glibc else "as the platform's comes")
