"""A new recurrent architecture is one file: what it declares and registers is all the suite needs.

This module defines a small architecture of its own, a minimal gated unit (one gate, after Zhou et
al. 2016, "Minimal Gated Unit for Recurrent Neural Networks", with its gate as a forget gate:

    f  = sigmoid(W_f x + b_f + U_f h + c_f)            forget gate
    n  = tanh(W_n x + b_n + U_n (f * h) + c_n)         candidate
    h' = f * h + (1 - f) * n

), registers its hand-written cell, and runs it through the suite's paths with nothing else
edited: the compiled variant that registration makes is held to it by the parity check, a task
trains and tests it end to end, the budget's forget-gate bias reaches the gate it declares, the
speed command counts its gates, and the gradient recorder steps through it.

The cells are registered for this module's tests only (a fixture), so that the other modules'
tests, parametrised over the registry, see the product's cells alone.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from bench.config import RunConfig
from bench.runner import execute
from bench.speed import MatmulFloor, Shape, matmul_flops, parse_shape, run_speed, training_matmul_flops
from bench.store import ResultsStore
from cells import CELLS, HandwrittenCell, State, register_cell
from cells.gradients import state_gradient_norms
from tasks.base import ModelConfig
from tasks.mnist import SequenceClassifier
from tests.test_cells import assert_same, make_pair
from tests.test_speed import profiled_matmul_flops


class MGUHandwritten(HandwrittenCell):
    architecture = "MGU"
    gates = 2  # f, n: the row blocks of the weights
    forget_gate = 0

    def step(self, xp_t: Tensor, state: State, w_hh: Tensor, b_hh: Tensor) -> State:
        (h,) = state
        x_f, x_n = xp_t.chunk(2, 1)
        w_f, w_n = w_hh.chunk(2, 0)
        b_f, b_n = b_hh.chunk(2)
        f = torch.sigmoid(x_f + torch.addmm(b_f, h, w_f.t()))
        n = torch.tanh(x_n + torch.addmm(b_n, f * h, w_n.t()))
        return (n + f * (h - n),)  # = f * h + (1 - f) * n


@pytest.fixture(scope="module", autouse=True)
def mgu_registered():
    register_cell("mgu_handwritten", MGUHandwritten, "minimal gated unit (a test's architecture)")
    yield
    CELLS.remove("mgu_handwritten")
    CELLS.remove("mgu_compiled")


def test_registration_makes_the_compiled_variant_held_to_the_hand_written_cell():
    compiled = CELLS.get("mgu_compiled")
    assert compiled.compiled and compiled.architecture == "MGU" and compiled.twin == "mgu_handwritten"


@pytest.mark.parametrize("num_layers, bidirectional, lengths", [(1, False, None), (2, True, [7, 3, 1, 6, 7])])
def test_the_compiled_variant_computes_what_the_hand_written_cell_computes(num_layers, bidirectional, lengths):
    torch.manual_seed(0)
    cell, twin = make_pair("mgu_compiled", 3, 5, num_layers, bidirectional, torch.float64)
    x = torch.randn(5, 7, 3, dtype=torch.float64)
    assert_same(cell, twin, x, lengths=None if lengths is None else torch.tensor(lengths))


def test_the_hand_written_cell_is_the_declared_equations():
    torch.manual_seed(1)
    cell = CELLS.get("mgu_handwritten").cls(3, 4).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    out, (h_final,) = cell(x)
    w = cell.weights()
    h = torch.zeros(2, 4, dtype=torch.float64)
    for t in range(5):
        gates = x[:, t] @ w["weight_ih_l0"].t() + w["bias_ih_l0"]
        f = torch.sigmoid(gates[:, :4] + h @ w["weight_hh_l0"][:4].t() + w["bias_hh_l0"][:4])
        n = torch.tanh(gates[:, 4:] + (f * h) @ w["weight_hh_l0"][4:].t() + w["bias_hh_l0"][4:])
        h = f * h + (1 - f) * n
        torch.testing.assert_close(out[:, t], h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_final[0], h, rtol=1e-12, atol=1e-12)


def test_a_task_trains_and_tests_it_end_to_end(tmp_path):
    config = RunConfig("adding", "mgu_handwritten", budget="smoke", task_options=(("length", "6"),), accelerator="cpu")
    record = execute(config, tmp_path)
    assert record["status"] == "ok" and record["cell"] == "mgu_handwritten" and math.isfinite(record["metric_value"])
    gradients = record["state_gradients"]  # the adding task records ‖∂L/∂h_t‖ through the hand-written cell
    assert len(gradients["init"]) == len(gradients["trained"]) == 6 and all(v > 0 for v in gradients["init"])


def test_the_budgets_forget_gate_bias_reaches_the_gate_it_declares():
    budget = RunConfig("adding", "mgu_compiled", budget="quick", accelerator="cpu")
    assert budget.budget_settings.forget_bias == 1.0
    encoder = budget.network(None).encoder
    hidden = encoder.hidden_size
    assert torch.all(encoder.bias_ih_l0[:hidden] == 1.0) and torch.all(encoder.bias_hh_l0[:hidden] == 0.0)
    assert not torch.all(encoder.bias_ih_l0[hidden:] == 1.0)  # the candidate's block keeps torch's initialisation


def test_the_speed_command_counts_its_gates_and_times_it(tmp_path):
    shape = Shape("s", 3, 4, 5, 6, layers=2, directions=2)
    cell = CELLS.get("mgu_handwritten").cls(5, 6, num_layers=2, bidirectional=True)
    x = torch.randn(3, 4, 5)

    # 2 gate blocks, as declared; the backward's count is not compared: f * h needs its gradient
    # even at the initial state (f depends on x), which the generic count leaves out
    assert profiled_matmul_flops(lambda: cell(x)) == matmul_flops(shape, "MGU")
    floor = MatmulFloor("MGU", shape, torch.device("cpu"))
    assert profiled_matmul_flops(floor.forward) == matmul_flops(shape, "MGU")
    assert profiled_matmul_flops(floor.forward_backward) == training_matmul_flops(shape, "MGU")
    rows = run_speed(["mgu_compiled"], [parse_shape("4,6,3,8")], "cpu", ResultsStore(tmp_path), warmup=1, repeats=2)
    by_cell = {row["cell"]: row for row in rows}
    assert set(by_cell) == {"mgu_compiled", "mgu_handwritten"}  # the twin is timed for the ratio
    assert all(row["status"] == "ok" for row in rows) and by_cell["mgu_compiled"]["ratio_to_fused"] > 0


def test_the_gradient_recorder_steps_through_it():
    """‖∂L/∂h_t‖ recorded through the hand-written twin of the compiled cell, against autograd on
    the cell itself: run it to t, cut the graph at h_t, run on from there."""
    torch.manual_seed(2)
    network = SequenceClassifier(ModelConfig("mgu_compiled", 5), 3, 3).double()
    x, y = torch.randn(4, 7, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    (recorded,) = state_gradient_norms(network, lambda net: nn.functional.cross_entropy(net(x), y, reduction="sum"))
    expected = []
    for t in range(1, 8):
        _, (h,) = network.encoder(x[:, :t])
        h = h.detach().requires_grad_(True)
        top = network.encoder(x[:, t:], (h,))[1][0] if t < 7 else h
        loss = nn.functional.cross_entropy(network.head(top[-1]), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, h)
        expected.append(float(grad[-1].norm(dim=-1).mean()))
    assert recorded == pytest.approx(expected, rel=1e-9)
