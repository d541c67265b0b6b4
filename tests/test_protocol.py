"""A budget's training protocol: initialisation of the cells, optimiser and schedule."""

from __future__ import annotations

import pytest
import torch

from cells import build_cell
from tasks import TASKS, ModelConfig
from tasks.base import Budget, initialise_cells, optimizer_and_schedule


@pytest.mark.parametrize("name", ["lstm_fused", "lstm_handwritten", "gru_fused", "rnn_handwritten"])
def test_initialise_sets_orthogonal_recurrent_blocks_and_the_lstm_forget_bias(name):
    torch.manual_seed(0)
    cell = build_cell(name, 3, 8, num_layers=2, bidirectional=True)
    before = {k: v.clone() for k, v in cell.weights().items()}
    cell.initialise(orthogonal=True, forget_bias=1.0)
    weights = cell.weights()
    recurrent = [k for k in weights if k.startswith("weight_hh")]
    assert len(recurrent) == 4
    for key in recurrent:
        for block in weights[key].split(8, dim=0):
            torch.testing.assert_close(block @ block.T, torch.eye(8), atol=1e-5, rtol=0)
    for key, value in weights.items():
        if not key.startswith("bias"):
            continue
        if cell.architecture == "LSTM":
            forget = value[8:16]
            assert torch.all(forget == (1.0 if key.startswith("bias_ih") else 0.0)), key
            torch.testing.assert_close(torch.cat([value[:8], value[16:]]), torch.cat([before[key][:8], before[key][16:]]))
        else:
            assert torch.equal(value, before[key]), f"{key}: a cell without a forget gate keeps its biases"


def test_paper_budget_of_the_pixel_tasks_initialises_every_cell_of_the_network():
    for task, forget_bias in (("mnist-pixel", 1.0), ("mnist-permuted", 10.0)):  # Bai et al. 2018, Table 3
        budget = TASKS.get(task).budget("paper")
        assert budget.optimizer == "rmsprop" and budget.lr == 1e-3 and budget.grad_clip == 1.0
        assert budget.forget_bias == forget_bias and not budget.orthogonal_init
        network = initialise_cells(TASKS.get(task).network(ModelConfig("lstm_fused", 16)), budget)
        bias = network.encoder.weights()["bias_ih_l0"]
        assert torch.all(bias[16:32] == forget_bias)


@pytest.mark.parametrize("cell", ["lstm_fused", "gru_fused", "rnn_fused"])
def test_paper_budget_of_the_pixel_tasks_gives_every_cell_about_70k_parameters(cell):
    from bench.config import RunConfig

    config = RunConfig(task="mnist-pixel", cell=cell, budget="paper")
    expected = {"lstm_fused": 130, "gru_fused": 150, "rnn_fused": 260}[cell]
    assert config.resolved_hidden_size == expected and config.identity()["hidden_size"] == expected
    network = TASKS.get("mnist-pixel").network(ModelConfig(cell, config.resolved_hidden_size))
    assert 70_000 <= sum(p.numel() for p in network.parameters()) <= 71_000  # the paper's "about 70K"
    assert RunConfig(task="mnist-pixel", cell=cell, budget="paper", hidden_size=64).resolved_hidden_size == 64


def test_optimizer_and_schedule_follow_the_budget():
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    optimizer, schedule = optimizer_and_schedule(parameters, Budget(1, 8, 8, lr=0.1, optimizer="rmsprop",
                                                                    schedule="constant"), 10)
    assert isinstance(optimizer, torch.optim.RMSprop) and optimizer.defaults["alpha"] == 0.9
    for _ in range(5):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    optimizer, schedule = optimizer_and_schedule(parameters, Budget(1, 8, 8, lr=0.1), 10)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]  # one kernel per weight
    assert not optimizer_and_schedule(parameters, Budget(1, 8, 8, lr=0.1), 10, fused=False)[0].defaults["fused"]
    for _ in range(10):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="optimizer must be one of adamw, rmsprop, got 'sgd'"):
        Budget(1, 8, 8, lr=0.1, optimizer="sgd")
    with pytest.raises(ValueError, match="schedule must be one of cosine, constant"):
        Budget(1, 8, 8, lr=0.1, schedule="step")
