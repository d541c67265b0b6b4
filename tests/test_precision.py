"""One precision per command: resolved and checked up front, set in one place for every backend,
stored on every row; on CUDA the hand-written cells agree with their cuDNN twins at each setting
within the tolerance documented here."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.precision import PRECISIONS, autocast, lightning_precision, resolve_precision, set_backend_precision
from bench.config import RunConfig
from bench.store import ResultsStore
from cells import CELLS

# Worst-case elementwise difference between a hand-written cell and its cuDNN twin, relative to the
# values' scale, at each precision (FP32: 1e-5, as in test_cells). TF32 keeps 10 mantissa bits, bf16
# 7 and fp16 10; the differences grow over the steps of the recurrence.
TOLERANCE = {"32": 1e-5, "tf32": 2e-2, "bf16-mixed": 6e-2, "16-mixed": 2e-2}
FLAGS = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)


@pytest.fixture
def restored_backends():
    before = [flag.fp32_precision for flag in FLAGS]
    yield
    for flag, value in zip(FLAGS, before):
        flag.fp32_precision = value


def test_auto_is_fp32_on_cpu_and_tf32_on_cuda():
    assert resolve_precision("auto", "cpu") == "32"
    assert resolve_precision("auto", "cuda") == "tf32"
    assert [resolve_precision(p, "cuda") for p in PRECISIONS] == list(PRECISIONS)


@pytest.mark.parametrize("precision", ["tf32", "bf16-mixed", "16-mixed"])
def test_reduced_precisions_need_cuda_and_say_so(precision):
    with pytest.raises(ValueError, match=rf"precision '{precision}' needs a CUDA device; on cpu the only precision is 32"):
        resolve_precision(precision, "cpu")


def test_an_unknown_precision_names_what_is_allowed():
    with pytest.raises(ValueError, match=r"precision must be auto or one of 32, tf32, bf16-mixed, 16-mixed, got 'fp8'"):
        resolve_precision("fp8", "cuda")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_one_place_sets_every_backend(precision, restored_backends):
    set_backend_precision(precision)
    expected = "tf32" if precision == "tf32" else "ieee"
    assert [flag.fp32_precision for flag in FLAGS] == [expected] * 3
    assert lightning_precision(precision) == ("32-true" if precision in ("32", "tf32") else precision)


def test_fp32_runs_keep_their_identity_and_store_their_precision():
    run = RunConfig(task="mnist-row", cell="gru_fused", accelerator="cpu")
    assert run.resolved_precision == "32" and "precision" not in run.identity()
    assert RunConfig(task="mnist-row", cell="gru_fused", accelerator="cpu", precision="32").run_id == run.run_id


@pytest.mark.parametrize("command", [["run", "--task", "mnist-row", "--budget", "smoke"], ["speed", "--repeats", "1"]])
def test_cli_rejects_a_cuda_precision_on_cpu_before_anything_runs(command, tmp_path):
    result = CliRunner().invoke(app, [*command, "--precision", "bf16-mixed", "--out", str(tmp_path)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "precision 'bf16-mixed' needs a CUDA device" in result.output
    assert not (tmp_path / "results.sqlite").exists() or not ResultsStore(tmp_path).rows("speed")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: TF32 and autocast precisions are CUDA's")
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", [spec.name for spec in CELLS if spec.twin and not spec.compiled])
def test_cuda_hand_written_cells_match_cudnn_at_each_precision(name, precision, restored_backends):
    from cells import build_cell, copy_weights

    set_backend_precision(precision)
    torch.manual_seed(0)
    spec = CELLS.get(name)
    twin = build_cell(spec.twin, 32, 64, 2, True).cuda()
    cell = build_cell(name, 32, 64, 2, True).cuda()
    copy_weights(twin, cell)
    x = torch.randn(8, 25, 32, device="cuda")
    results = []
    for module in (cell, twin):
        with autocast(precision, "cuda"):
            output, _ = module(x)
        output.float().square().mean().backward()
        results.append((output.float().detach(), {k: p.grad.float() for k, p in module.weights().items()}))
    (out, grads), (out_twin, grads_twin) = results
    tol = TOLERANCE[precision]

    def close(a, b, what):
        assert (a - b).abs().max() <= tol * b.abs().max().clamp_min(1e-6), f"{what} differs at {precision}"

    close(out, out_twin, "output")
    for key in grads_twin:
        close(grads[key], grads_twin[key], f"grad of {key}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: a bf16-mixed training run")
def test_cuda_run_at_bf16_stores_its_precision_and_identity(shared_data, tmp_path):
    result = CliRunner().invoke(app, ["run", "--task", "mnist-row", "--cell", "lstm_fused", "--budget", "smoke",
                                      "--precision", "bf16-mixed", "--accelerator", "cuda", "--out", str(tmp_path),
                                      "--data-dir", str(shared_data), "--no-download"])
    assert result.exit_code == 0, result.output
    (row,) = ResultsStore(tmp_path).rows()
    assert row["precision"] == "bf16-mixed" and row["config"]["precision"] == "bf16-mixed"
    assert "| bf16-mixed |" in (tmp_path / "report.md").read_text()
