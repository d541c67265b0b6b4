"""‖∂L/∂h_t‖ per time step: the recorded norms against autograd on the fused cell itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cells.gradients import state_gradient_norms
from tasks.base import ModelConfig
from tasks.mnist import SequenceClassifier

STEPS, FEATURES, HIDDEN, BATCH = 7, 3, 5, 4


def by_splitting(network: SequenceClassifier, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """∂L/∂h_t from autograd on the fused cell: run it to t, cut the graph at h_t (the rest of the
    state held fixed), run it on from there, and take the gradient of the loss at the cut."""
    cell = network.encoder.rnn  # torch.nn.RNN / LSTM / GRU
    norms = []
    for t in range(1, STEPS + 1):
        _, state = cell(x[:, :t])
        h = (state[0] if isinstance(state, tuple) else state).detach().requires_grad_(True)
        rest = (h, state[1].detach()) if isinstance(state, tuple) else h
        if t < STEPS:
            _, final = cell(x[:, t:], rest)
            top = final[0] if isinstance(final, tuple) else final
        else:
            top = h
        loss = nn.functional.cross_entropy(network.head(top[-1]), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, h)
        norms.append(float(grad[-1].norm(dim=-1).mean()))
    return norms


@pytest.mark.parametrize("architecture", ["rnn", "lstm", "gru"])
def test_recorded_norms_equal_autograd_on_the_fused_cell(architecture):
    torch.manual_seed(0)
    network = SequenceClassifier(ModelConfig(f"{architecture}_fused", HIDDEN), FEATURES, 3).double()
    x, y = torch.randn(BATCH, STEPS, FEATURES, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    before = {k: v.clone() for k, v in network.state_dict().items()}
    (recorded,) = state_gradient_norms(network, lambda net: nn.functional.cross_entropy(net(x), y, reduction="sum"))
    assert recorded == pytest.approx(by_splitting(network, x, y), rel=1e-9)
    assert len(recorded) == STEPS and all(v > 0 for v in recorded)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())  # the network is untouched
    assert all(p.grad is None for p in network.parameters())


def test_hand_written_and_fused_twins_record_the_same_norms_two_layers():
    torch.manual_seed(1)
    fused = SequenceClassifier(ModelConfig("gru_fused", HIDDEN, num_layers=2), FEATURES, 3)
    hand = SequenceClassifier(ModelConfig("gru_handwritten", HIDDEN, num_layers=2), FEATURES, 3)
    hand.load_state_dict({k.replace("encoder.rnn.", "encoder."): v for k, v in fused.state_dict().items()})
    x, y = torch.randn(BATCH, STEPS, FEATURES), torch.tensor([0, 1, 2, 1])
    loss = lambda net: nn.functional.cross_entropy(net(x), y, reduction="sum")  # noqa: E731
    assert state_gradient_norms(hand, loss)[0] == pytest.approx(state_gradient_norms(fused, loss)[0], rel=1e-4)


def test_tanh_rnn_gradient_vanishes_back_through_time_with_small_recurrent_weights():
    torch.manual_seed(0)
    network = SequenceClassifier(ModelConfig("rnn_fused", 16), FEATURES, 3)
    with torch.no_grad():
        network.encoder.rnn.weight_hh_l0.mul_(0.5)  # spectral radius well below 1
    x, y = torch.randn(BATCH, 60, FEATURES), torch.tensor([0, 1, 2, 1])
    (norms,) = state_gradient_norms(network, lambda net: nn.functional.cross_entropy(net(x), y, reduction="sum"))
    assert norms[0] < 1e-6 * norms[-1]  # sixty steps back, the gradient is gone


def test_a_network_without_a_recurrent_cell_is_an_error():
    with pytest.raises(ValueError, match="no recurrent cell"):
        state_gradient_norms(nn.Linear(2, 2), lambda net: net(torch.ones(1, 2)).sum())
