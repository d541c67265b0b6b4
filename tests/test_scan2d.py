"""The two-dimensional scans (`cells.scan2d`): the Row scan with kernels of width 1 is one 1-D cell per
column, for every gating; skewing is undone exactly; each scan's output depends on the pixels its
definition says, and on no others; a cell that cannot serve a scan is refused by name."""

from __future__ import annotations

import pytest
import torch

from cells import CELLS, build_cell, register_cell
from cells.scan2d import DiagonalBiScan, DiagonalScan, MaskedConv2d, RowScan, scan_gating, skew, unskew

GATINGS = ["rnn_fused", "lstm_fused", "gru_fused"]


def _row_scan_and_columns_twin(cell: str, channels: int, hidden: int):
    torch.manual_seed(0)
    scan = RowScan(cell, channels, hidden, input_width=1, state_width=1).double()
    twin = build_cell(cell, channels, hidden).double()  # the fused 1-D cell
    weights = twin.weights()
    with torch.no_grad():
        weights["weight_ih_l0"].copy_(scan.input_to_state.weight[:, :, 0, 0])
        weights["bias_ih_l0"].copy_(scan.input_to_state.bias)
        weights["weight_hh_l0"].copy_(scan.state_to_state.weight[:, :, 0])
        weights["bias_hh_l0"].copy_(scan.state_to_state.bias)
    return scan, twin


@pytest.mark.parametrize("cell", GATINGS)
def test_a_row_scan_with_kernels_of_width_one_is_a_1d_cell_down_each_column(cell):
    batch, channels, height, width, hidden = 3, 2, 6, 5, 4
    scan, twin = _row_scan_and_columns_twin(cell, channels, hidden)
    x = torch.randn(batch, channels, height, width, dtype=torch.float64)
    x_scan, x_twin = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, state = scan(x_scan, return_state=True)  # (B, hidden, H, W), (B, hidden, W) each
    columns = x_twin.permute(0, 3, 2, 1).reshape(batch * width, height, channels)  # a sequence per column
    out_twin, state_twin = twin(columns)  # (B*W, H, hidden), (1, B*W, hidden) each
    torch.testing.assert_close(out, out_twin.reshape(batch, width, height, hidden).permute(0, 3, 2, 1))
    assert len(state) == len(state_twin) == CELLS.get(cell).cls.state_size
    for s, t in zip(state, state_twin):
        torch.testing.assert_close(s, t[0].reshape(batch, width, hidden).permute(0, 2, 1))
    weight = torch.randn(out.shape, dtype=torch.float64)
    loss = (out * weight).sum() + sum((s ** 2).sum() for s in state)
    loss_twin = (out_twin * weight.permute(0, 3, 2, 1).reshape(batch * width, height, hidden)).sum() + sum(
        (t ** 2).sum() for t in state_twin)
    loss.backward()
    loss_twin.backward()
    torch.testing.assert_close(x_scan.grad, x_twin.grad)
    grads = twin.weights()
    torch.testing.assert_close(scan.input_to_state.weight.grad[:, :, 0, 0], grads["weight_ih_l0"].grad)
    torch.testing.assert_close(scan.input_to_state.bias.grad, grads["bias_ih_l0"].grad)
    torch.testing.assert_close(scan.state_to_state.weight.grad[:, :, 0], grads["weight_hh_l0"].grad)
    torch.testing.assert_close(scan.state_to_state.bias.grad, grads["bias_hh_l0"].grad)


def test_skew_shifts_row_i_right_by_i_and_unskew_undoes_it():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    skewed = skew(x)
    assert skewed.shape == (2, 3, 4, 5 + 4 - 1)
    for i in range(4):
        assert torch.equal(skewed[:, :, i, i:i + 5], x[:, :, i])
        assert not skewed[:, :, i, :i].any() and not skewed[:, :, i, i + 5:].any()
    assert torch.equal(unskew(skewed, 5), x)


def _depends(scan, height: int = 5, width: int = 6) -> torch.Tensor:
    """(H, W, H, W) booleans: whether the output at (i, j) depends on the input at (i2, j2)."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, height, width, dtype=torch.float64, requires_grad=True)
    out = scan.double()(x)
    seen = torch.zeros(height, width, height, width, dtype=torch.bool)
    for i in range(height):
        for j in range(width):
            (grad,) = torch.autograd.grad(out[0, :, i, j].sum(), x, retain_graph=True)
            seen[i, j] = grad[0].abs().sum(0) > 0
    return seen


def _expected(height, width, rule) -> torch.Tensor:
    return torch.tensor([[[[rule(i, j, a, b) for b in range(width)] for a in range(height)] for j in range(width)]
                         for i in range(height)])


@pytest.mark.parametrize("cell", GATINGS)
def test_the_diagonal_scans_see_the_context_the_paper_gives_them(cell):
    # one direction: the pixel, those above it and left of it (its left and upper neighbours, recursively)
    assert torch.equal(_depends(DiagonalScan(cell, 2, 3)), _expected(5, 6, lambda i, j, a, b: a <= i and b <= j))
    # both, the right-to-left shifted down a row: every pixel of the rows above, and the row up to the pixel
    assert torch.equal(_depends(DiagonalBiScan(cell, 2, 3)),
                       _expected(5, 6, lambda i, j, a, b: a < i or (a == i and b <= j)))


@pytest.mark.parametrize("masked", [False, True])
def test_the_row_scan_sees_a_triangle_above_the_pixel(masked):
    # the row's pixels within the input kernel (masked: none right of the pixel), and above, one
    # pixel wider on each side per row up (the state-to-state kernel's reach)
    seen = _depends(RowScan("lstm_fused", 2, 3, masked=masked))
    right = 0 if masked else 1
    assert torch.equal(seen, _expected(5, 6, lambda i, j, a, b: a <= i and j - 1 - (i - a) <= b <= j + right + (i - a)))


def test_masked_convolutions_see_before_the_centre_and_mask_b_the_centre_too():
    for mask, centre in (("A", False), ("B", True)):
        conv = MaskedConv2d(2, 1, 5, mask).double()
        seen = _depends(conv, 7, 7)
        assert seen[3, 3, 3, 3] == centre and not seen[3, 3, 3, 4] and not seen[3, 3, 4, 3]
        assert seen[3, 3, 3, 2] and seen[3, 3, 2, 5] and seen[3, 3, 1, 1]
    with pytest.raises(ValueError, match="mask must be one of A, B"):
        MaskedConv2d(1, 1, 3, "C")


def test_the_forget_gate_bias_is_set_as_for_the_1d_cells():
    scan = DiagonalBiScan("lstm_fused", 2, 4)
    scan.initialise(forget_bias=1.0)
    for direction in (scan.forward_scan, scan.backward_scan):
        assert torch.all(direction.input_to_state.bias[4:8] == 1.0) and torch.all(direction.state_to_state.bias[4:8] == 0)
    gru = RowScan("gru_fused", 2, 4)
    before = gru.input_to_state.bias.clone()
    gru.initialise(forget_bias=1.0)  # no forget gate: unchanged
    assert torch.equal(gru.input_to_state.bias, before)


def test_a_cell_whose_step_is_not_gate_equations_of_a_projection_is_refused_by_name():
    from tests.test_one_file_architecture import MGUHandwritten

    register_cell("mgu_handwritten", MGUHandwritten, "minimal gated unit (a test's architecture)")
    try:
        with pytest.raises(ValueError, match=r"cell 'mgu_compiled' \(MGU\) cannot serve a two-dimensional scan.*"
                                             r"cells that can: gru_compiled, gru_fused.*rnn_handwritten$"):
            RowScan("mgu_compiled", 1, 4)
    finally:
        CELLS.remove("mgu_handwritten")
        CELLS.remove("mgu_compiled")
    assert scan_gating("lstm_compiled").architecture == "LSTM"


def test_a_scan_task_refuses_a_model_it_cannot_build_before_anything_runs():
    from bench.config import RunConfig

    with pytest.raises(ValueError, match="--bidirectional has no meaning for a two-dimensional scan"):
        RunConfig("mnist-scan-row", "lstm_fused", bidirectional=True)
    from tasks import TASKS
    from tasks.base import ModelConfig

    network = TASKS.get("mnist-scan-diagonal").network(ModelConfig("gru_fused", 4, num_layers=2, dropout=0.1))
    assert len(network.scans) == 2 and network.scans[1].forward_scan.in_channels == 4
    assert network(torch.randn(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("cell", GATINGS)
def test_the_two_directions_in_one_scan_equal_two_scans(cell):
    """DiagonalBiScan runs both directions as one batch with a grouped convolution: the same as its
    two DiagonalScans run apart, the mirrored one shifted down a row (outputs and gradients)."""
    torch.manual_seed(3)
    scan = DiagonalBiScan(cell, 2, 3).double()
    x = torch.randn(4, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    out = scan(x)
    apart = scan.forward_scan(x) + torch.nn.functional.pad(scan.backward_scan(x.flip(3)).flip(3)[:, :, :-1],
                                                           (0, 0, 1, 0))
    torch.testing.assert_close(out, apart)
    weight = torch.randn(out.shape, dtype=torch.float64)
    grads = torch.autograd.grad((out * weight).sum(), [x, *scan.parameters()])
    grads_apart = torch.autograd.grad((apart * weight).sum(), [x, *scan.parameters()])
    for a, b in zip(grads, grads_apart):
        torch.testing.assert_close(a, b)


def test_the_command_line_refuses_a_scan_it_cannot_build_naming_the_input(tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    result = CliRunner().invoke(app, ["run", "--task", "mnist-scan-row", "--cell", "lstm_fused", "--bidirectional",
                                      "--budget", "smoke", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--bidirectional has no meaning for a two-dimensional scan" in result.output
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
    with pytest.raises(ValueError, match="input_width must be odd"):
        RowScan("lstm_fused", 1, 4, input_width=2)
    with pytest.raises(ValueError, match="odd kernel sizes, got 4 x 3"):
        MaskedConv2d(1, 1, (4, 3), "B")


@pytest.mark.parametrize("scan, steps", [("row", 28), ("diagonal", 55)])
def test_the_gradient_recorder_takes_a_scans_step_as_its_time_step(scan, steps):
    """‖∂L/∂h_t‖ for a 2-D scan: one value per row (Row) or diagonal (Diagonal). At the last step
    nothing later reads h_t, so its gradient is the loss's at that step's positions of the output:
    the last row (Row), the bottom-right pixel (the Diagonal scan's last diagonal in its
    left-to-right direction; the rest of that column is the skew's padding)."""
    from cells.gradients import state_gradient_norms
    from cells.scan2d import SCANS
    from tasks import TASKS
    from tasks.base import ModelConfig

    torch.manual_seed(0)
    layer = SCANS[scan]("lstm_fused", 2, 3).double()
    x = torch.randn(4, 2, 28, 28, dtype=torch.float64)
    weight = torch.randn(4, 3, 28, 28, dtype=torch.float64)
    (norms,) = state_gradient_norms(layer, lambda net: (net(x) * weight).sum())
    assert len(norms) == steps and all(n > 0 for n in norms)
    last = weight[:, :, -1] if scan == "row" else weight[:, :, -1, -1]
    assert norms[-1] == pytest.approx(last.flatten(1).norm(dim=1).mean().item(), rel=1e-9)
    # in a task's network: the top layer of the stack
    network = TASKS.get(f"mnist-scan-{scan}").network(ModelConfig("gru_fused", 3, num_layers=2))
    recorded = state_gradient_norms(network, lambda net: net(x[:, :1]).sum(), torch.float64)
    assert len(recorded) == 1 and len(recorded[0]) == steps
