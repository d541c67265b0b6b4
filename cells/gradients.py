"""The vanishing gradient, measured: ‖∂L/∂h_t‖ for every time step t of a network's recurrent cell.

    norms = state_gradient_norms(network, lambda net: loss_sum(net(x), y))   # [‖∂L/∂h_1‖, ..., ‖∂L/∂h_T‖]

A fused cell (cuDNN / oneDNN) keeps its per-step states inside the library, so the network is
copied with each recurrent cell replaced by its hand-written twin (the same equations in a Python
loop, the weights copied by name; the parity tests hold the two equal), and autograd keeps the
gradient of every h_t the loop produces. ∂L/∂h_t is the gradient with respect to the hidden state
h_t as the next step receives it (for an LSTM, with c_t held fixed): what flows back through
time, the quantity of Hochreiter (1991) and Bengio et al. (1994). The norm is taken per sample
and averaged over the batch; the loss should be a sum over the samples, so that each sample's
gradient is its own loss's.

For a two-dimensional scan (`cells.scan2d`) a time step is one step of the scan: h_t is the state
of the whole row t (the Row scan) or diagonal t (the Diagonal scan's left-to-right direction),
its norm taken over all of its positions and channels; a network's scans count as one stack,
its top layer recorded.
"""

from __future__ import annotations

import copy
import inspect
from typing import Callable

import torch
from torch import Tensor, nn

from cells.base import HandwrittenCell, RecurrentCell
from cells.catalog import handwritten_class

def _record(cell: HandwrittenCell) -> list[list[Tensor]]:
    """Make a (throw-away) hand-written cell keep every h its steps produce, gradients retained;
    returns the record: one list of h_1..h_T per scan, in the order the scans run (layer by
    layer, each direction in turn)."""
    scans: list[list[Tensor]] = []
    step, scan = cell.step, cell.scan

    def recording_step(xp_t, state, w_hh, b_hh):
        new = step(xp_t, state, w_hh, b_hh)
        new[0].retain_grad()
        scans[-1].append(new[0])
        return new

    def recording_scan(*args, **kwargs):
        scans.append([])
        return scan(*args, **kwargs)

    cell.step, cell.scan = recording_step, recording_scan
    return scans


def _record_scan(scan: nn.Module) -> tuple[list[list[Tensor]], slice]:
    """Make a two-dimensional scan (`cells.scan2d`) keep the state its gating produces at each step
    (a row, or a diagonal), gradients retained; returns the record and the rows of the recorded
    batch that are the forward direction's (the Diagonal scan runs its two as one batch of 2B)."""
    from cells.scan2d import DiagonalBiScan

    rows = slice(None, None, 2) if isinstance(scan, DiagonalBiScan) else slice(None)
    gating = scan.forward_scan.gating if isinstance(scan, DiagonalBiScan) else scan.gating
    steps: list[Tensor] = []
    combine = gating.combine

    def recording_combine(xp_t, hp_t, state):
        new = combine(xp_t, hp_t, state)
        new[0].retain_grad()
        steps.append(new[0])
        return new

    gating.combine = recording_combine
    return [steps], rows


def handwritten_twin(cell: RecurrentCell) -> HandwrittenCell:
    """A plain hand-written cell (no compilation) computing what `cell` computes, weights copied."""
    cls = handwritten_class(cell.architecture)
    # the options the class takes beyond the common ones (the tanh RNN's nonlinearity), as the cell has them
    common = inspect.signature(RecurrentCell.__init__).parameters
    options = {name: getattr(cell, name) for name in inspect.signature(cls.__init__).parameters
               if name not in common and hasattr(cell, name)}
    twin = cls(cell.input_size, cell.hidden_size, cell.num_layers, cell.bidirectional, cell.dropout, **options)
    twin.load_state_dict({name: p.detach() for name, p in cell.weights().items()})
    reference = next(cell.parameters())
    return twin.to(device=reference.device, dtype=reference.dtype)


def state_gradient_norms(network: nn.Module, loss: Callable[[nn.Module], Tensor],
                         dtype: torch.dtype | None = None) -> list[list[float]]:
    """Per recurrent cell of `network` (in module order): the batch mean of ‖∂L/∂h_t‖ for t = 1..T
    (of the cell's last call), where L = `loss(copy)` is computed on a copy of the network in
    evaluation mode whose cells are recording hand-written twins. `dtype`: the copy's (float64
    keeps norms far below float32's smallest, 1e-45, from underflowing to zero; `loss` must then
    feed it inputs of that type). The network itself is left as it was."""
    copied = copy.deepcopy(network).eval()
    if dtype is not None:
        copied.to(dtype)
    from cells.scan2d import SCANS

    records, scans = [], []
    for name, module in list(copied.named_modules()):
        if isinstance(module, RecurrentCell) and name:
            twin = handwritten_twin(module)
            records.append((twin.num_directions, _record(twin), slice(None)))
            parent, _, attribute = name.rpartition(".")
            setattr(copied.get_submodule(parent), attribute, twin)
        elif isinstance(module, tuple(SCANS.values())):
            scans.append(module)
    if scans:  # a network's scans as one stack: its top layer recorded
        records.append((1, *_record_scan(scans[-1])))
    if not records:
        raise ValueError("the network has no recurrent cell or two-dimensional scan")
    with torch.enable_grad():
        value = loss(copied)
        value.backward()
    out = []
    for directions, steps, rows in records:
        top = steps[-directions] if steps else []  # the top layer's forward direction (its last call)
        out.append([float(_norms(h.grad[rows].flatten(1)).mean()) if h.grad is not None else 0.0 for h in top])
    return out


def _norms(grad: Tensor) -> Tensor:
    """Row norms of (B, H), scaled by the largest entry first: squaring a 1e-170 underflows even in float64."""
    scale = grad.abs().amax(-1, keepdim=True)
    return scale.squeeze(-1) * (grad / torch.where(scale > 0, scale, 1.0)).norm(dim=-1)
