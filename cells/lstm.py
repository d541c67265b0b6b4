"""LSTM (Hochreiter & Schmidhuber 1997) with a forget gate (Gers et al. 2000), as torch.nn.LSTM.

    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate
    f = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)         cell candidate
    o = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate
    c' = f * c + i * g
    h' = o * tanh(c')
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cells.base import FusedCell, HandwrittenCell, State
from cells.catalog import register_cell


class LSTMFused(FusedCell):
    architecture = "LSTM"
    forget_gate = 1  # i, f, g, o
    module_class = nn.LSTM
    state_size = 2


class LSTMHandwritten(HandwrittenCell):
    architecture = "LSTM"
    forget_gate = 1
    gates = 4  # i, f, g, o: the row order of torch.nn.LSTM's weights
    state_size = 2

    def combine(self, xp_t: Tensor, hp_t: Tensor, state: State) -> State:
        _, c = state  # (B, H)
        i, f, g, o = (xp_t + hp_t).chunk(4, 1)  # (B, H) each
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


register_cell("lstm_fused", LSTMFused, "LSTM with forget gate, torch.nn.LSTM (cuDNN / oneDNN)")
register_cell("lstm_handwritten", LSTMHandwritten, "LSTM, input/forget/output gates and cell state in a Python time loop", twin="lstm_fused")
