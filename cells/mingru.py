"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?", arXiv 2410.01201): the GRU with its gate and
candidate read from the input alone, so that the recurrence is linear in h.

    z  = sigmoid(W_z x + b_z)                      update gate
    h~ = g(W_h x + b_h)                            candidate, g(v) = v + 1/2 (v >= 0), sigmoid(v) (v < 0)
    h' = (1 - z) * h + z * h~

g keeps the candidate positive, as the paper's log-space scan needs; the sequential loop applies it
too, so that every form computes one function (the paper's code does the same in both modes).
Implementations: `mingru_handwritten`, the loop above (the definition; `mingru_compiled` is its
compiled variant); `mingru_scan`, all steps at once in log space (`cells/linear_recurrence.py`, in pieces of 64
steps for float32's sake); `mingru_sequential`, the gates of all steps in one compiled kernel and
the recurrence h' = a h + b a loop of multiply-adds with its own backward; `mingru_kernel`, the
gates and the recurrence in one C++ pass over time, forward and backward (`cells/linear_recurrence.cpp`:
the fastest on a CPU). In the scan,
log(1 - z) = -softplus(v_z), log z = -softplus(-v_z), log h~ = log_g(v_h). Layers stack as the
other cells' do (each layer's outputs the next one's inputs, dropout between them); the paper's
language models wrap each layer in a normalisation, a residual connection and a feed-forward
block, which are the network's, not the cell's.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from cells.base import HandwrittenCell, State
from cells.catalog import register_cell
from cells.linear_recurrence import g, log_g, register_parallel_forms


class MinGRUHandwritten(HandwrittenCell):
    architecture = "minGRU"
    gates = 2  # z, h~: the row blocks of weight_ih
    recurrent_weights = False

    def step(self, xp_t: Tensor, state: State, w_hh: None, b_hh: None) -> State:
        (h,) = state  # (B, H)
        v_z, v_h = xp_t.chunk(2, 1)
        z = torch.sigmoid(v_z)
        return (h + z * (g(v_h) - h),)  # = (1 - z) * h + z * h~

    @staticmethod
    def coefficients(xp: Tensor) -> tuple[Tensor, Tensor]:
        """a = 1 - z, b = z * h~ of every step, from xp (..., 2H)."""
        v_z, v_h = xp.chunk(2, -1)
        z = torch.sigmoid(v_z)
        return 1 - z, z * g(v_h)

    def log_coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        v_z, v_h = xp.chunk(2, -1)  # (B, T, H) each
        return -F.softplus(v_z), -F.softplus(-v_z) + log_g(v_h)  # log(1 - z), log(z * h~)


register_cell("mingru_handwritten", MinGRUHandwritten, "minGRU (Feng et al. 2024): gate and candidate from the input "
              "alone, h' = (1 - z) h + z g(W x), in a Python time loop")
register_parallel_forms("mingru", MinGRUHandwritten)
