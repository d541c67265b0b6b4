"""A recurrence linear in h, h_t = a_t * h_{t-1} + b_t element by element, with a_t in (0, 1) and
b_t > 0 (minGRU, minLSTM: Feng et al. 2024, "Were RNNs All We Needed?", arXiv 2410.01201), in two
forms beside a cell's own loop. `LogScan`: every step at once in log space (Heinsen 2023, as the
paper's code does):

    A_t = a_1 ... a_t                          log A_t = cumsum(log a)
    h_t = A_t h_0 + sum_{k <= t} (A_t / A_k) b_k
        = A_t h_0 + exp(log A_t + logcumsumexp_k(log b_k - log A_k))

The paper's code puts log h_0 in front of the values, so h_0 must be positive; here the h_0 term is
kept apart, so that any initial state (zeros, or a bridge's tanh output) enters exactly.

Precision: log A_t falls about linearly with t (to about -T * mean(-log a)) and
logcumsumexp(log b - log A) rises with it, so their sum cancels two large numbers: in float32
(relative precision 6e-8) the result's relative error grows like 6e-8 * |log A_t|. Over the whole
sequence at once (the paper's code) that reached 1e-4 of the largest output and 2e-3 of the largest
weight gradient at 4,096 steps (a keep-gate near 0.9; set against the loop in float64), against
2e-7 and 6e-6 for the loop in float32; so the scan runs in pieces of `CHUNK` steps, each in log space from its own start, and
carries the state from piece to piece with plain multiply-adds.

`LogScan` is the mixin a cell of such an architecture uses: the cell's `log_coefficients(xp)` gives
log a and log b from the projected input of all steps; padded steps get a = 1, b = 0 (the state is
left as it was) and zero outputs, as the interface requires. `SequentialRecurrence`: a and b of
every step at once in one compiled kernel, then the recurrence as a loop of multiply-adds with its
own backward.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def g(x: Tensor) -> Tensor:
    """The paper's positive activation of the candidate state: x + 1/2 for x >= 0, sigmoid(x) below."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """log g(x), without computing g(x) first where it is small."""
    return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))


# Steps per piece of the scan: log A_t is taken from the piece's start, so |log A_t| (and the
# float32 error, see above) is bounded by the piece, not the sequence; the pieces' start states
# follow one another in a loop of T / CHUNK plain multiply-adds.
CHUNK = 64
# log b of a padded step: b = 0 without -inf, whose logcumsumexp over a piece that is all padding
# would give a NaN gradient (exp(-inf - -inf))
PADDING_LOG = -1e4


def linear_scan_log(log_a: Tensor, log_b: Tensor, h0: Tensor, chunk: int = CHUNK) -> Tensor:
    """h_t = a_t h_{t-1} + b_t for t = 1..T from log a, log b (B, T, H) and h0 (B, H): h (B, T, H)."""
    batch, steps, hidden = log_a.shape
    pad = -steps % chunk
    if pad:  # a = 1, b = 0 after the end
        log_a = F.pad(log_a, (0, 0, 0, pad))
        log_b = F.pad(log_b, (0, 0, 0, pad), value=PADDING_LOG)
    pieces = (steps + pad) // chunk
    log_a, log_b = log_a.view(batch, pieces, chunk, hidden), log_b.view(batch, pieces, chunk, hidden)
    log_decay = log_a.cumsum(2)  # log A_t from the piece's start
    local = (log_decay + (log_b - log_decay).logcumsumexp(2)).exp()  # h from a zero state at the piece's start
    decay = log_decay.exp()
    starts, state = [], h0
    for through, end in zip(decay[:, :, -1].unbind(1), local[:, :, -1].unbind(1)):
        starts.append(state)
        state = through * state + end
    h = local + decay * torch.stack(starts, 1).unsqueeze(2)
    return h.view(batch, pieces * chunk, hidden)[:, :steps]


class LogScan:
    """Mixin for a hand-written cell whose step is h' = a * h + b: its `scan` runs in parallel over time.
    The cell defines `log_coefficients(xp)`: log a, log b (B, T, H) from the projected input xp
    (B, T, G*H) of every step (put before the cell in the bases, the mixin's `scan` wins)."""

    def scan(self, xp, state, w_hh, b_hh, mask):
        log_a, log_b = self.log_coefficients(xp)
        if mask is not None:  # padding: a = 1, b = 0
            log_a = torch.where(mask, log_a, 0.0)
            log_b = torch.where(mask, log_b, PADDING_LOG)
        h = linear_scan_log(log_a, log_b, state[0])
        final = h[:, -1]  # the padded steps kept each sequence's last real state
        return (h if mask is None else torch.where(mask, h, 0.0)), (final,)


class _Recurrence(torch.autograd.Function):
    """h_t = a_t h_{t-1} + b_t over a time-major (T, B, H) a and b, as plain loops of one fused
    multiply-add a step, forward and backward: no autograd graph per step, nothing saved but a and h."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        h = torch.empty_like(b)
        state = h0
        for t, (a_t, b_t) in enumerate(zip(a.unbind(0), b.unbind(0))):
            state = torch.addcmul(b_t, a_t, state, out=h[t])
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, h, h0 = ctx.saved_tensors
        grad_b = torch.empty_like(grad)  # dL/dh_t with what flows back from later steps: dL/db_t
        carry = grad_b[-1].copy_(grad[-1])
        for t in range(len(grad) - 2, -1, -1):
            carry = torch.addcmul(grad[t], a[t + 1], carry, out=grad_b[t])
        previous = torch.cat([h0.unsqueeze(0), h[:-1]])
        return grad_b * previous, grad_b, a[0] * grad_b[0]


_COMPILED_COEFFICIENTS: dict[type, object] = {}


class SequentialRecurrence:
    """Mixin for a hand-written cell whose step is h' = a * h + b: a and b of every step at once
    (the cell's `coefficients(xp)`, a static method, compiled by torch.compile into one kernel
    forward and one backward), then the recurrence as a loop of one multiply-add a step with its
    own backward. Why this form: on a CPU the log-space scan spends most of its time in
    logcumsumexp and the compiled loop in its per-step graph, where the recurrence itself is T
    small multiply-adds and the gates element-wise passes that one compiled kernel does at once
    (`rnnbench speed` at the mnist-pixel shape: docs/results.md)."""

    def scan(self, xp, state, w_hh, b_hh, mask):
        cls = type(self)
        if cls not in _COMPILED_COEFFICIENTS:
            from cells.compiled import _raise_recompile_limit

            _raise_recompile_limit()
            _COMPILED_COEFFICIENTS[cls] = torch.compile(cls.coefficients, fullgraph=True, dynamic=False)
        a, b = _COMPILED_COEFFICIENTS[cls](xp)  # (B, T, H) each; batch-first: its backward writes xp's layout
        if mask is not None:  # padding: a = 1, b = 0
            a, b = torch.where(mask, a, 1.0), torch.where(mask, b, 0.0)
        a, b = a.transpose(0, 1).contiguous(), b.transpose(0, 1).contiguous()  # (T, B, H): a step is contiguous
        h = _Recurrence.apply(a, b, state[0]).transpose(0, 1)  # (B, T, H)
        final = h[:, -1]
        return (h if mask is None else torch.where(mask, h, 0.0)), (final,)
