"""Vanilla (Elman) RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh (default) or relu."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cells.base import FusedCell, HandwrittenCell, State
from cells.catalog import register_cell

NONLINEARITIES = ("tanh", "relu")


def _check_nonlinearity(nonlinearity: str) -> str:
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {', '.join(NONLINEARITIES)}, got {nonlinearity!r}")
    return nonlinearity


class RNNFused(FusedCell):
    architecture = "RNN"
    module_class = nn.RNN

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0, nonlinearity="tanh"):
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout, nonlinearity=nonlinearity)


class RNNHandwritten(HandwrittenCell):
    architecture = "RNN"
    gates = 1

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0, nonlinearity="tanh"):
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)
        self.activation = torch.tanh if nonlinearity == "tanh" else torch.relu

    def combine(self, xp_t: Tensor, hp_t: Tensor, state: State) -> State:
        return (self.activation(xp_t + hp_t),)


register_cell("rnn_fused", RNNFused, "vanilla tanh RNN, torch.nn.RNN (cuDNN / ATen); nonlinearity=relu optional")
register_cell("rnn_handwritten", RNNHandwritten, "vanilla tanh RNN, h' = tanh(W x + U h + b) in a Python time loop", twin="rnn_fused")
