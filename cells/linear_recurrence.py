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
own backward (any device). `KernelRecurrence`: gates and recurrence in one C++ pass over time,
forward and backward (`linear_recurrence.cpp`; CPU), the fastest form on a CPU.
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
    own backward. Why this form beside the others: it runs on any device with torch alone; on a
    CPU the log-space scan spends most of its time in logcumsumexp and the compiled loop in its
    per-step graph, where the recurrence itself is T small multiply-adds and the gates element-wise
    passes that one compiled kernel does at once; `KernelRecurrence` is faster still on a CPU
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


# Inputs of at most this many features are projected inside the kernel, step by step: the projected
# input xp (B, T, G*H) is then never written, read back and differentiated as a tensor; wider inputs
# are projected by one matrix product before the kernel, since the kernel's cost grows with the
# width. Measured (mingru_kernel, B 64, T 784, H 128, forward+backward, 2-core AMD EPYC, freed
# memory kept as runs keep it, docs/results.md): inside / matmul first 24 / 36 ms at 1 feature,
# 47 / 74 at 4, 76 / 75 at 8, 138 / 38 at 16.
PROJECT_INSIDE = 8

_EXTENSION = None
STALE_LOCK_S = 600


def _cpu_key() -> str:
    """A short hash of this CPU's model and flags: the kernel is built for the CPU it runs on
    (-march=native), so that a home folder shared between machines keeps one build per CPU."""
    import hashlib
    import platform

    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info if line.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = [platform.processor()]
    return hashlib.sha1("".join(lines).encode()).hexdigest()[:8]


def kernels():
    """The C++ kernels of `cells/linear_recurrence.cpp`, built on first use (torch.utils.cpp_extension:
    a C++ compiler and ninja; about 30 s once, then cached under TORCH_EXTENSIONS_DIR)."""
    global _EXTENSION
    if _EXTENSION is None:
        import os
        import subprocess
        import sys
        import time
        from pathlib import Path

        from torch.utils import cpp_extension

        try:  # the pip package's ninja, where the environment's bin folder is not on PATH
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass
        name = f"rnnbench_linear_recurrence_{_cpu_key()}"
        # a build killed part-way leaves its lock behind, and torch then waits for it for ever;
        # a build takes about 30 s, so a lock older than STALE_LOCK_S is a dead one
        try:
            lock = Path(cpp_extension._get_build_directory(name, False)) / "lock"
            if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
                print(f"rnnbench: removing the stale build lock {lock} (left by a build that was stopped)",
                      file=sys.stderr)
                lock.unlink(missing_ok=True)
        except (AttributeError, OSError):  # no lock (the usual case), or a torch that builds elsewhere
            pass
        try:
            _EXTENSION = cpp_extension.load(
                name, [str(Path(__file__).with_name("linear_recurrence.cpp"))],
                # -ffast-math: glibc's vector exp in the loops (tests/test_minimal_cells.py checks that
                # loading the library leaves the process's denormals as they were)
                extra_cflags=["-O3", "-ffast-math", "-fopenmp", "-march=native"], extra_ldflags=["-fopenmp"],
            )
        except (RuntimeError, OSError, subprocess.CalledProcessError, ImportError) as error:
            raise RuntimeError(
                f"the C++ kernel of the *_kernel cells could not be built: {error}. It needs a C++ compiler "
                "(g++) and ninja (`pip install ninja`); the *_sequential and *_scan forms of the same cells need neither"
            ) from error
    return _EXTENSION


class _Kernel(torch.autograd.Function):
    """A layer's one direction through the C++ kernel, forward and backward; the input is xp (no
    weights given) or x with W transposed and b (projected inside the kernel)."""

    @staticmethod
    def forward(ctx, kernel: str, inputs: Tensor, weight_t: Tensor, bias: Tensor, h0: Tensor, lengths: Tensor):
        h, final = getattr(kernels(), f"{kernel}_forward")(inputs, weight_t, bias, h0, lengths)
        ctx.kernel = kernel
        ctx.save_for_backward(inputs, weight_t, bias, h0, lengths, h)
        return h, final

    @staticmethod
    def backward(ctx, grad: Tensor | None, grad_final: Tensor | None):
        inputs, weight_t, bias, h0, lengths, h = ctx.saved_tensors
        grad = torch.zeros_like(h) if grad is None else grad.contiguous()
        grad_final = torch.zeros_like(h0) if grad_final is None else grad_final.contiguous()
        grad_inputs, grad_weight_t, grad_bias, grad_h0 = getattr(kernels(), f"{ctx.kernel}_backward")(
            inputs, weight_t, bias, h0, lengths, h, grad, grad_final)
        projected = weight_t.numel() > 0
        return (None, grad_inputs, grad_weight_t if projected else None, grad_bias if projected else None,
                grad_h0, None)


class KernelRecurrence:
    """Mixin for minGRU and minLSTM (class attribute `kernel`: "mingru" or "minlstm"): each layer's
    direction is one C++ pass over time forward and one backward, the gates computed in the same loop
    as the recurrence (`cells/linear_recurrence.cpp`). Why this form: at the mnist-pixel shape the
    work is a few multiply-adds and two exponentials on each of B x H lanes a step, so the cost of the
    other forms is in passes over memory and per-step dispatch, not arithmetic: the log scan spends
    most of its time in logcumsumexp, the sequential form in its separate gate kernels, the
    transposes and T small multiply-adds a direction (docs/results.md measures them against each
    other). CPU only; float32 and float64 (half precision runs in float32)."""

    kernel: str
    cpu_only = True

    def direction(self, layer_input, w_ih, b_ih, w_hh, b_hh, state, mask, reverse):
        if layer_input.device.type != "cpu":
            raise RuntimeError(
                f"{type(self).__name__} runs on the CPU only (a C++ kernel); on {layer_input.device.type} use the "
                f"{self.kernel}_scan or {self.kernel}_sequential cell")
        x = layer_input if reverse is None else reverse(layer_input)
        (h0,) = state
        dtype = torch.float64 if torch.float64 in (x.dtype, w_ih.dtype) else torch.float32
        lengths = (x.new_empty(0, dtype=torch.long) if mask is None
                   else mask[:, :, 0].sum(1, dtype=torch.long).cpu())
        bias = b_ih if b_ih is not None else w_ih.new_zeros(w_ih.shape[0])
        if x.shape[2] <= PROJECT_INSIDE:
            h, final = _Kernel.apply(self.kernel, x.to(dtype).contiguous(), w_ih.to(dtype).t().contiguous(),
                                     bias.to(dtype).contiguous(), h0.to(dtype).contiguous(), lengths)
        else:
            xp = torch.nn.functional.linear(x, w_ih, b_ih).to(dtype).contiguous()
            none = xp.new_empty(0)
            h, final = _Kernel.apply(self.kernel, xp, none, none, h0.to(dtype).contiguous(), lengths)
        h, final = h.to(layer_input.dtype), final.to(layer_input.dtype)
        return (h if reverse is None else reverse(h)), (final,)


def register_parallel_forms(prefix: str, loop: type) -> None:
    """Register the forms of a hand-written cell whose step is h' = a h + b (`loop`, with
    `coefficients`, `log_coefficients` and a kernel named `prefix` in linear_recurrence.cpp) beside
    it, each held to it: `<prefix>_scan`, `<prefix>_sequential`, `<prefix>_kernel`. The classes are
    made, not written, and kept in this module's namespace under their names, so that they pickle."""
    from cells.catalog import register_cell

    arch, base = loop.architecture, loop.__name__.removesuffix("Handwritten")
    forms = (
        ("scan", "Scan", (LogScan,), "a log-space parallel scan over time (cumsum + logcumsumexp)"),
        ("sequential", "Sequential", (SequentialRecurrence,),
         "its gates for every step in one compiled kernel, the recurrence a multiply-add loop with its own backward"),
        ("kernel", "Kernel", (KernelRecurrence,),
         "one C++ pass over time forward and one backward, the gates computed in the loop (CPU only)"),
    )
    for suffix, kind, mixins, description in forms:
        name = base + kind
        made = type(name, (*mixins, loop), {"__module__": __name__, "__qualname__": name, "kernel": prefix,
                                            "__doc__": f"{arch}, {description}."})
        globals()[name] = made
        register_cell(f"{prefix}_{suffix}", made, f"{arch}: {description}", twin=f"{prefix}_handwritten")
