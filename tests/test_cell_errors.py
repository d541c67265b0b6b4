"""Bad configurations and inputs give errors that name the input and what is allowed."""

from __future__ import annotations

import pytest
import torch

from cells import CELLS, UnknownNameError, build_cell, copy_weights

ALL = CELLS.names()


def test_unknown_cell_lists_close_and_all_names():
    with pytest.raises(UnknownNameError) as err:
        build_cell("lstm_fsued", 3, 4)
    message = str(err.value)
    assert "unknown cell 'lstm_fsued'" in message
    assert "Did you mean 'lstm_fused'" in message
    for name in ALL:
        assert name in message


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"input_size": 0}, "input_size must be a positive integer, got 0"),
        ({"hidden_size": -3}, "hidden_size must be a positive integer, got -3"),
        ({"hidden_size": 2.5}, "hidden_size must be a positive integer, got 2.5"),
        ({"num_layers": 0}, "num_layers must be a positive integer, got 0"),
        ({"dropout": 1.0, "num_layers": 2}, "dropout must be a number in [0, 1), got 1.0"),
        ({"dropout": 0.2}, "needs num_layers > 1"),
        ({"bidirectional": "yes"}, "bidirectional must be True or False"),
    ],
)
def test_bad_configuration(name, kwargs, needle):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(ValueError) as err:
        build_cell(name, **args)
    assert needle in str(err.value)


def test_unknown_option_and_bad_nonlinearity():
    with pytest.raises(ValueError, match="cell 'lstm_fused' has no option 'nonlinearity'; its options: none"):
        build_cell("lstm_fused", 3, 4, nonlinearity="relu")
    for name in ("rnn_fused", "rnn_handwritten"):
        with pytest.raises(ValueError, match="nonlinearity must be one of tanh, relu, got 'sigmoid'"):
            build_cell(name, 3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs(name):
    cell = build_cell(name, 3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"x must be batch-first \(B, T, I\) with I=3, got shape \(5, 3\)"):
        cell(torch.randn(5, 3))
    with pytest.raises(ValueError, match="x has 2 features per step but the cell was built with input_size=3"):
        cell(torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match="at least one sequence and one step"):
        cell(torch.randn(2, 0, 3))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        cell(torch.ones(2, 5, 3, dtype=torch.long))
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=5\], got values from 0 to 5"):
        cell(x, lengths=torch.tensor([5, 0]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=5\], got values from 2 to 6"):
        cell(x, lengths=torch.tensor([6, 2]))
    with pytest.raises(ValueError, match="lengths must be a 1-D tensor of 2 lengths"):
        cell(x, lengths=torch.tensor([5, 5, 5]))
    with pytest.raises(TypeError, match="lengths must be an integer tensor"):
        cell(x, lengths=torch.tensor([5.0, 2.0]))
    good = tuple(torch.zeros(2, 2, 4) for _ in range(cell.state_size))
    cell(x, good)
    with pytest.raises(ValueError, match=r"each state tensor must have shape \(2, 2, 4\)"):
        cell(x, tuple(torch.zeros(1, 2, 4) for _ in range(cell.state_size)))
    with pytest.raises(ValueError, match="state must be a tuple"):
        cell(x, good + good)
    with pytest.raises(ValueError, match="state must match x in dtype"):
        cell(x, tuple(s.double() for s in good))


def test_copy_weights_refuses_mismatched_cells():
    with pytest.raises(ValueError, match="different weights"):
        copy_weights(build_cell("lstm_fused", 3, 4), build_cell("lstm_handwritten", 3, 4, bidirectional=True))
    with pytest.raises(ValueError, match="source shape"):
        copy_weights(build_cell("lstm_fused", 3, 4), build_cell("lstm_handwritten", 3, 5))
