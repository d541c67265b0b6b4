"""Hand-written cells with their time loop compiled by `torch.compile` (TorchInductor).

The gate equations are the hand-written ones (`cells/rnn.py`, `lstm.py`, `gru.py`), so the
parity tests hold these cells to their fused twins too. What changes is speed: the whole
unrolled loop of one layer and direction becomes one compiled graph, forward and backward.
Compiling costs seconds to minutes, once per input shape, and grows with the sequence length
(a few seconds at 28 steps; a 784-step loop takes minutes), so these cells suit short
sequences; `rnnbench speed` reports the first call's time in its own column.
"""

from __future__ import annotations

import torch

from cells.base import HandwrittenCell
from cells.catalog import register_cell
from cells.gru import GRUHandwritten
from cells.lstm import LSTMHandwritten
from cells.rnn import RNNHandwritten



def _raise_recompile_limit() -> None:
    """Every (shape, direction, mask) is its own graph; dynamo's default limit of 8 per code object
    would silently fall back to eager in a long matrix or in the parity tests. Done on first use:
    importing torch._dynamo costs a second, which `import cells` should not pay."""
    import torch._dynamo

    config = torch._dynamo.config
    config.cache_size_limit = max(config.cache_size_limit, 256)
    if hasattr(config, "recompile_limit"):
        config.recompile_limit = max(config.recompile_limit, 256)


class CompiledScan:
    """Mixin: `scan` (the time loop of `HandwrittenCell`) runs as a compiled graph."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._compile()

    def _compile(self) -> None:
        _raise_recompile_limit()
        self._compiled_scan = torch.compile(HandwrittenCell.scan.__get__(self), fullgraph=True, dynamic=False)

    def scan(self, xp, state, w_hh, b_hh, mask):
        return self._compiled_scan(xp, state, w_hh, b_hh, mask)

    # a compiled function does not pickle (DDP spawn, deepcopy): compile again on the other side
    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_compiled_scan", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._compile()


class RNNCompiled(CompiledScan, RNNHandwritten):
    pass


class LSTMCompiled(CompiledScan, LSTMHandwritten):
    pass


class GRUCompiled(CompiledScan, GRUHandwritten):
    pass


register_cell("rnn_compiled", RNNCompiled, "rnn_handwritten with its time loop compiled (torch.compile)", twin="rnn_fused", compiled=True)
register_cell("lstm_compiled", LSTMCompiled, "lstm_handwritten with its time loop compiled (torch.compile)", twin="lstm_fused", compiled=True)
register_cell("gru_compiled", GRUCompiled, "gru_handwritten with its time loop compiled (torch.compile)", twin="gru_fused", compiled=True)
