"""GRU (Cho et al. 2014), in the form of torch.nn.GRU (reset gate applied after the matmul).

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      reset gate
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)      update gate
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   candidate
    h' = (1 - z) * n + z * h
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cells.base import FusedCell, HandwrittenCell, State
from cells.catalog import register_cell


class GRUFused(FusedCell):
    architecture = "GRU"
    module_class = nn.GRU


class GRUHandwritten(HandwrittenCell):
    architecture = "GRU"
    gates = 3  # r, z, n: the row order of torch.nn.GRU's weights

    def combine(self, xp_t: Tensor, hp_t: Tensor, state: State) -> State:
        (h,) = state  # (B, H)
        x_r, x_z, x_n = xp_t.chunk(3, 1)
        h_r, h_z, h_n = hp_t.chunk(3, 1)  # (B, H) each
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (n + z * (h - n),)  # = (1 - z) * n + z * h


register_cell("gru_fused", GRUFused, "GRU, torch.nn.GRU (cuDNN / ATen)")
register_cell("gru_handwritten", GRUHandwritten, "GRU, reset/update gates in a Python time loop", twin="gru_fused")
