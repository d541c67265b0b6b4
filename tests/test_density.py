"""The density task (`mnist-density`): every logit depends only on the pixels before its own, for
both scans and every gating; the binarization is a fixed stochastic draw; the NLL is -log p(x);
the baseline and the samples are what they say; a run's report shows the baseline, the
published rows and the sample grid."""

from __future__ import annotations

import math

import pytest
import torch

from tasks import TASKS, ModelConfig
from tasks.density import (BinarizedMNIST, ImageNLL, IndependentPixels, PixelRNN, binarized, image_nll,
                           independent_pixels, sample)

GATINGS = ["rnn_fused", "lstm_fused", "gru_fused"]


def _network(cell: str, scan: str, layers: int = 2) -> PixelRNN:
    torch.manual_seed(0)
    return PixelRNN(ModelConfig(cell, 8, num_layers=layers), scan).double().eval()  # 16 channels: no position all ReLU-dead


@pytest.mark.parametrize("scan", ["row", "diagonal"])
@pytest.mark.parametrize("cell", GATINGS)
def test_no_logit_depends_on_its_own_pixel_or_a_later_one(cell, scan):
    height, width = 7, 8
    network = _network(cell, scan)
    x = torch.bernoulli(torch.full((1, 1, height, width), 0.5, dtype=torch.float64)).requires_grad_(True)
    logits = network(x)
    order = torch.arange(height * width).view(height, width)
    for position in range(height * width):
        i, j = divmod(position, width)
        (grad,) = torch.autograd.grad(logits[0, 0, i, j], x, retain_graph=True)
        seen = grad[0, 0] != 0
        assert not seen[order >= position].any(), f"the logit at ({i}, {j}) sees its own pixel or a later one"
        if scan == "diagonal":
            expected = torch.tensor([[_diagonal_sees(i, j, a, b, height, width) for b in range(width)]
                                     for a in range(height)])
            assert torch.equal(seen, expected), f"the logit at ({i}, {j})"
        elif position:
            assert seen[order < position].any()


def _diagonal_sees(i: int, j: int, a: int, b: int, height: int, width: int) -> bool:
    """Whether the Diagonal network's logit at (i, j) depends on pixel (a, b): the 7 x 7 mask-A
    convolution puts the pixel into the features of the positions after it within its reach, and
    the Diagonal scans give (i, j) the features of every position up to its own in raster order
    (all the rows above, its row up to itself). The pixel just before a row's first one in raster
    order (the end of the row above) reaches no feature before that first pixel: even the paper's
    full-context layer leaves it out there."""
    reach = [(a, b + c) for c in range(1, 4)] + [(a + r, b + c) for r in range(1, 4) for c in range(-3, 4)]
    return any(0 <= q < height and 0 <= k < width and (q < i or (q == i and k <= j)) for q, k in reach)


@pytest.mark.parametrize("scan", ["row", "diagonal"])
def test_the_rows_above_are_computed_alike_without_the_rows_below(scan):
    """What sampling relies on: cropping the image below row k leaves rows up to k unchanged."""
    network = _network("lstm_fused", scan)
    x = torch.bernoulli(torch.full((2, 1, 9, 9), 0.4, dtype=torch.float64))
    full = network(x)
    for k in (1, 4, 8):
        torch.testing.assert_close(network(x[:, :, :k]), full[:, :, :k])


def test_binarization_is_a_fixed_stochastic_draw_not_a_threshold():
    intensity = torch.full((2000, 28, 28), 128, dtype=torch.uint8)  # 0.502 each
    once, again = binarized(intensity), binarized(intensity)
    assert once.shape == (2000, 1, 28, 28) and torch.equal(once, again)
    assert set(once.unique().tolist()) == {0.0, 1.0}
    assert abs(once.mean().item() - 128 / 255) < 0.005  # a 0.5 threshold would give all ones
    assert not torch.equal(once, binarized(intensity, seed=1))
    assert not binarized(torch.zeros(3, 28, 28, dtype=torch.uint8)).any()
    assert binarized(torch.full((3, 28, 28), 255, dtype=torch.uint8)).all()


def test_the_nll_is_minus_log_of_the_product_of_the_pixels_probabilities():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 4, 5, dtype=torch.float64)
    x = torch.bernoulli(torch.full((3, 1, 4, 5), 0.5, dtype=torch.float64))
    p = torch.sigmoid(logits)
    direct = -torch.log(torch.where(x == 1, p, 1 - p)).flatten(1).sum(1)
    torch.testing.assert_close(image_nll(logits, x), direct)
    metric = ImageNLL()
    metric.update(logits[:2], x[:2])
    metric.update(logits[2:], x[2:])
    assert math.isclose(metric.compute().item(), direct.mean().item(), rel_tol=1e-12)


def test_samples_follow_the_networks_conditionals_and_are_reproducible():
    frequency = torch.zeros(1, 6, 6)
    frequency[:, :, :3] = 1.0  # left half always on, right half never
    certain = IndependentPixels(frequency.clamp(1e-9, 1 - 1e-9))
    drawn = sample(certain, 5, side=6)
    assert torch.equal(drawn, frequency.expand(5, 1, 6, 6))
    network = _network("gru_fused", "row").float()
    first, second = sample(network, 4, side=6), sample(network, 4, side=6)
    assert torch.equal(first, second) and set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, sample(network, 4, seed=1, side=6))


def test_the_independent_pixels_baseline_scores_206_nats_on_the_test_split(shared_data):
    task = TASKS.get("mnist-density")
    data = BinarizedMNIST(shared_data, 1000, download=False)
    data.setup("fit")
    baseline = independent_pixels(data)
    values, samples = task.score_baseline(baseline, data)
    assert samples == 10_000
    assert values["nll"] == pytest.approx(205.8, abs=0.05)  # a bare script gave 206.0 on its seed-0 binarization


def test_the_scan_option_names_what_it_allows():
    task = TASKS.get("mnist-density")
    with pytest.raises(ValueError, match=r"scan='spiral': must be one of row, diagonal"):
        task.configured({"scan": "spiral"})
    assert task.configured({"scan": "diagonal"}).network(ModelConfig("gru_fused", 4)).scans[0].__class__.__name__ \
        == "DiagonalBiScan"
    assert dict(task.budget("paper").task_options) == {"scan": "diagonal"}


def test_a_density_run_reports_its_baseline_the_published_rows_and_its_samples(shared_data, tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    result = CliRunner().invoke(app, ["run", "--task", "mnist-density", "--cell", "gru_fused", "--budget", "smoke",
                                      "--data-dir", str(shared_data), "--out", str(tmp_path), "--no-download"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| gru_fused ") for line in table)
    assert any(line.startswith("| baseline: independent pixels | smoke") for line in table)
    assert any(line.startswith("| published: Diagonal BiLSTM (7 layers, h = 16) | its own | - | 79.20 |")
               for line in table)
    assert "test nll (nats)" in table[0]
    assert "Published results of models and training of their own, for scale" in report
    assert "### Samples drawn from the tested networks" in report and "Examples from the test set" not in report
    pictures = [line for line in report.splitlines() if "samples.png" in line]
    assert pictures and (tmp_path / pictures[0].split("(")[1].rstrip(")")).is_file()


def test_the_gpu_checks_density_curve_prints_validation_nll_as_it_trains(shared_data, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "density_curve.py"
    spec = importlib.util.spec_from_file_location("density_curve", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--budget", "smoke", "--layers", "1", "--hidden", "4", "--seconds", "2", "--every", "0.5",
                 "--val-batches", "1", "--data-dir", str(shared_data)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("mnist-density smoke: lstm_fused, scan=row, 1 layers of h 4")
    rows = [line.split() for line in lines[2:]]
    assert len(rows) >= 2 and all(len(row) == 4 for row in rows)
    seconds = [float(row[0]) for row in rows]
    assert seconds == sorted(seconds) and seconds[-1] >= 1.5
    assert all(0 < float(row[3]) < 1000 for row in rows)  # nats per image: 784 * log 2 = 543 at chance
