"""`benchmarks/harness_overhead.py` through its command line: on the smoke budget it warms both
sides up, prints each round's ratio and their median; bad inputs are named."""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "harness_overhead.py"


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=SCRIPT.parents[1])


def test_the_benchmark_warms_up_and_prints_each_round_and_the_median(shared_data):
    result = run("--budget", "smoke", "--rounds", "2", "--cell", "rnn_fused", "--data-dir", str(shared_data))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("rnn_fused")]
    assert "warm-up" in lines[0] and "harness" in lines[0]
    rounds = [line for line in lines if line[1].isdigit()]
    assert [line[1] for line in rounds] == ["1", "2"]
    ratios = []
    for _, _, bare, harness, ratio in rounds:  # a smoke fit can take under 5 ms: seconds may print as 0.00
        assert float(bare) >= 0 and float(harness) >= 0 and float(ratio) > 0
        ratios.append(float(ratio))
    median = [line for line in lines if line[1] == "median"]
    assert len(median) == 1 and float(median[0][3]) == pytest.approx(statistics.median(ratios), abs=0.011)


def load_script():
    spec = importlib.util.spec_from_file_location("harness_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_warmup_leaves_the_warm_up_out(shared_data, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--budget", "smoke", "--rounds", "1", "--cell", "rnn_fused",
                                      "--no-warmup", "--data-dir", str(shared_data)])
    load_script().main()
    out = capsys.readouterr().out
    assert "warm-up" not in out and "rnn_fused       median ratio" in out, out


@pytest.mark.parametrize("args, message", [
    (["--rounds", "0"], "argument --rounds: '0' is not a positive integer"),
    (["--hidden", "x"], "argument --hidden: 'x' is not a positive integer"),
    (["--cell", "nope"], "unknown cell 'nope'"),
    (["--task", "nope"], "unknown task 'nope'"),
    (["--budget", "nope"], "unknown budget 'nope' for task 'mnist-row'; budgets: smoke, quick, paper"),
])
def test_the_benchmark_names_a_bad_input(args, message, monkeypatch, capsys):
    module = load_script()
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    with pytest.raises(SystemExit) as exit:
        module.main()
    assert exit.value.code == 2 and message in capsys.readouterr().err
