"""minLSTM (Feng et al. 2024, "Were RNNs All We Needed?", arXiv 2410.01201): the LSTM with its gates
read from the input alone, the forget and input gates normalised to sum to one, no cell state.

    f  = sigmoid(W_f x + b_f)                      forget gate
    i  = sigmoid(W_i x + b_i)                      input gate
    h~ = g(W_h x + b_h)                            candidate, g(v) = v + 1/2 (v >= 0), sigmoid(v) (v < 0)
    h' = f / (f + i) * h + i / (f + i) * h~

As for minGRU (`cells/mingru.py`): g in every form, `minlstm_handwritten` the loop (and its compiled
variant), `minlstm_sequential` the compiled gates and a multiply-add loop, `minlstm_kernel` the C++
pass (the same derivatives written out in `cells/linear_recurrence.cpp`), `minlstm_scan` the
log-space scan, with d = softplus(-v_f) - softplus(-v_i) = log(i / f):
log f' = -softplus(d), log i' = -softplus(-d) (the paper's code). The forget gate is block 0, so a
budget's forget-gate bias starts the cell keeping its state, as for the LSTM.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from cells.base import HandwrittenCell, State
from cells.catalog import register_cell
from cells.linear_recurrence import g, log_g, register_parallel_forms


class MinLSTMHandwritten(HandwrittenCell):
    architecture = "minLSTM"
    gates = 3  # f, i, h~: the row blocks of weight_ih
    forget_gate = 0
    recurrent_weights = False

    def step(self, xp_t: Tensor, state: State, w_hh: None, b_hh: None) -> State:
        (h,) = state  # (B, H)
        v_f, v_i, v_h = xp_t.chunk(3, 1)
        f, i = torch.sigmoid(v_f), torch.sigmoid(v_i)
        return ((f * h + i * g(v_h)) / (f + i),)

    @staticmethod
    def coefficients(xp: Tensor) -> tuple[Tensor, Tensor]:
        """a = f / (f + i), b = i / (f + i) * h~ of every step, from xp (..., 3H)."""
        v_f, v_i, v_h = xp.chunk(3, -1)
        f, i = torch.sigmoid(v_f), torch.sigmoid(v_i)
        return f / (f + i), i / (f + i) * g(v_h)

    def log_coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        v_f, v_i, v_h = xp.chunk(3, -1)  # (B, T, H) each
        d = F.softplus(-v_f) - F.softplus(-v_i)  # log(i / f)
        return -F.softplus(d), -F.softplus(-d) + log_g(v_h)  # log f', log(i' * h~)


register_cell("minlstm_handwritten", MinLSTMHandwritten, "minLSTM (Feng et al. 2024): gates and candidate from the "
              "input alone, h' = (f h + i g(W x)) / (f + i), in a Python time loop")
register_parallel_forms("minlstm", MinLSTMHandwritten)
