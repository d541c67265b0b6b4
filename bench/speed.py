"""Cell-level speed and memory, in the manner of DeepBench and PyTorch's fastrnns.

    rnnbench speed                                    # every cell at the MNIST-row shape, CPU
    rnnbench speed --cell lstm_fused --cell lstm_compiled --shape fastrnns --shape 32,50,256,256
    rnnbench speed --device cuda --shape-set gpu

For every cell and shape: the forward pass and forward+backward (loss = sum of the outputs;
the input needs no gradient, as for pixels or embeddings), timed after warm-up over many
repeats with the device synchronised (CUDA events on GPU), median and interquartile range.
The cells of a shape are timed in turn, one call each per round, so that a shared machine's
drift falls on all alike. Also: tokens/s (batch x steps per second of forward+backward);
achieved FLOP/s of the matmuls against the peak the same run measures with a large matmul on
the same device; the matmul floor (the matmuls alone of a hand-written loop at that shape);
peak memory (the CUDA allocator's peak on GPU, bytes saved for backward on CPU); and the first
call's time (compilation and other set-up) in its own column.

The scan shapes (`--shape-set scans`) time PixelRNN's two-dimensional layers (`cells.scan2d`) with
each cell's gating over a batch of MNIST-sized images; their products are convolutions, so they
have no matmul count or floor, and tokens are pixels.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from bench.measure import SavedTensorBytes, median_iqr
from bench.precision import autocast, matmul_dtype, set_backend_precision
from cells import CELLS, build_cell
from cells.catalog import gate_count, handwritten_class


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    steps: int
    input_size: int
    hidden_size: int
    layers: int = 1
    directions: int = 1
    # a two-dimensional scan (`cells.scan2d`) of a steps x steps image of input_size channels, with
    # the cell's gating: "row" or "diagonal"; None: the cell itself over a sequence
    scan: str | None = None

    def describe(self) -> str:
        if self.scan:
            return (f"B={self.batch} image {self.steps}x{self.steps} C={self.input_size} H={self.hidden_size}"
                    f" {self.scan} scan")
        return (f"B={self.batch} T={self.steps} I={self.input_size} H={self.hidden_size}"
                f" L={self.layers} D={self.directions}")


SHAPES = {s.name: s for s in [
    Shape("mnist-row", 64, 28, 28, 128),
    Shape("mnist-pixel", 64, 784, 1, 128),
    # PixelRNN's layers on one MNIST image channel, at the hidden sizes of the scan tasks' quick budgets
    Shape("mnist-scan-row", 64, 28, 1, 32, scan="row"),
    Shape("mnist-scan-diagonal", 64, 28, 1, 16, scan="diagonal"),
    Shape("fastrnns", 64, 100, 512, 512),  # the default of PyTorch's benchmarks/fastrnns
    # DeepBench-like training shapes (hidden = input, 25 or 50 steps); sized for GPUs
    Shape("deepbench-h512-b32-t25", 32, 25, 512, 512),
    Shape("deepbench-h1024-b64-t25", 64, 25, 1024, 1024),
    Shape("deepbench-h2048-b32-t25", 32, 25, 2048, 2048),
    Shape("deepbench-h1536-b16-t50", 16, 50, 1536, 1536),
]}
SHAPE_SETS = {
    "cpu": ["mnist-row"],
    "mnist": ["mnist-row", "mnist-pixel"],
    "scans": ["mnist-scan-row", "mnist-scan-diagonal"],
    "gpu": ["fastrnns", "deepbench-h512-b32-t25", "deepbench-h1024-b64-t25", "deepbench-h2048-b32-t25",
            "deepbench-h1536-b16-t50"],
}


def parse_shape(text: str) -> Shape:
    """A named shape, or B,T,I,H[,L[,D]]."""
    if text in SHAPES:
        return SHAPES[text]
    try:
        numbers = [int(v) for v in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) not in (4, 5, 6) or min(numbers) < 1 or (len(numbers) == 6 and numbers[5] not in (1, 2)):
        raise ValueError(f"shape must be one of {', '.join(SHAPES)} or B,T,I,H[,L[,D]] with positive integers "
                         f"and D in 1, 2; got {text!r}")
    return Shape(text, *numbers)


def matmul_flops(shape: Shape, architecture: str) -> int:
    """Matmul FLOPs of one forward pass (2 per multiply-add); element-wise work is not counted.

    Per layer and direction: the input projection 2*B*T*I_l*G*H and the recurrence 2*B*T*H*G*H,
    with G gate blocks (RNN 1, LSTM 4, GRU 3) and I_l = I for the first layer, D*H after it.
    """
    g, h = gate_count(architecture), shape.hidden_size
    recurrent = h if handwritten_class(architecture).recurrent_weights else 0  # minGRU, minLSTM: no W_hh
    total = 0
    for layer in range(shape.layers):
        inputs = shape.input_size if layer == 0 else shape.directions * h
        total += shape.directions * 2 * shape.batch * shape.steps * (inputs * g * h + recurrent * g * h)
    return total


def training_matmul_flops(shape: Shape, architecture: str) -> int:
    """Matmul FLOPs of forward+backward: the backward pass does each forward matmul twice (the
    gradients of both operands) except where no gradient is asked for: the first layer's input
    (like pixels or embeddings) and the initial states (zeros), as in the timed calls."""
    g, h = gate_count(architecture) * shape.hidden_size, shape.hidden_size
    recurrent = h if handwritten_class(architecture).recurrent_weights else 0
    not_asked = shape.directions * 2 * shape.batch * (shape.steps * shape.input_size * g + shape.layers * recurrent * g)
    return 3 * matmul_flops(shape, architecture) - not_asked


def flops_per_second(flops: float, seconds: float) -> float:
    return flops / seconds if seconds > 0 else float("nan")


class Timer:
    """Times calls of a function: warm-up calls first, then `repeats` timed calls, each bracketed
    by device synchronisation. On CUDA, CUDA events time the device; elsewhere the clock."""

    def __init__(self, device: torch.device, clock: Callable[[], float] = time.perf_counter,
                 sync: Callable[[], None] | None = None):
        self.device, self.clock = device, clock
        self.sync = sync or ((lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None))

    def __call__(self, fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
        return self.interleaved([fn], warmup, repeats)[0]

    def interleaved(self, fns: list[Callable[[], object]], warmup: int, repeats: int) -> list[list[float]]:
        """Warm each function up, then `repeats` rounds of one timed call of each, in turn. On a
        shared machine whose speed drifts, the drift falls on every function alike, so their
        ratios hold better than with one function's repeats after another's."""
        for fn in fns:
            for _ in range(warmup):
                fn()
        samples: list[list[float]] = [[] for _ in fns]
        for _ in range(repeats):
            for fn, kept in zip(fns, samples):
                kept.append(self._timed(fn))
        return samples

    def _timed(self, fn: Callable[[], object]) -> float:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.sync()
            start.record()
            fn()
            end.record()
            self.sync()
            return start.elapsed_time(end) / 1e3
        return self.once(fn)

    def once(self, fn: Callable[[], object]) -> float:
        """One call on the host clock, synchronised on both sides (also on CUDA: set-up is host time)."""
        self.sync()
        begin = self.clock()
        fn()
        self.sync()
        return self.clock() - begin


def peak_matmul_flops(device: torch.device, timer: Timer, size: int | None = None, repeats: int = 10,
                      warmup_s: float = 0.5, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a large matmul on `device` in `dtype` (under the backends' FP32 mode: TF32 or not),
    the peak the achieved figures are set against: the fastest of `repeats` calls after at least
    `warmup_s` seconds of warm-up (thread pools, page faults and clock ramp-up make the first calls
    of a process slow)."""
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    first = timer.once(lambda: a @ b)  # the first of the warm-up calls
    warmup = max(1, math.ceil(warmup_s / first) - 1) if first > 0 else 1
    seconds = min(timer(lambda: a @ b, warmup=min(warmup, 1000), repeats=repeats))
    return flops_per_second(2 * size**3, seconds)


class MatmulFloor:
    """The matmuls alone that a hand-written loop of `architecture` does at `shape`, no element-wise
    work: per layer and direction, the input projection of all steps in one matmul and one
    (B, H) x (H, G*H) matmul per step; backward, one (B, G*H) x (G*H, H) matmul per step for the
    state's gradient (but the initial state's), then the weight gradients, and the input's above
    the first layer, one matmul each. A floor for any cell built from torch's matmuls; a fused
    kernel may still beat it with faster small-matrix kernels."""

    def __init__(self, architecture: str, shape: Shape, device: torch.device, dtype: torch.dtype = torch.float32):
        self.name = f"matmul floor ({architecture})"
        h, g = shape.hidden_size, gate_count(architecture) * shape.hidden_size
        rows = shape.batch * shape.steps
        self.steps = shape.steps
        self.layers = []  # one dict of buffers per layer and direction

        def new(*size):
            return torch.randn(*size, device=device, dtype=dtype)  # the precision's matmul dtype: what autocast runs

        for layer in range(shape.layers):
            inputs = shape.input_size if layer == 0 else shape.directions * h
            for _ in range(shape.directions):
                self.layers.append({
                    "first": layer == 0, "x": new(rows, inputs), "w_ih": new(g, inputs), "w_hh": new(g, h),
                    "xp": new(rows, g), "h": new(shape.batch, h), "gates": new(shape.batch, g),
                    "d_gates": new(rows, g), "d_gates_t": new(shape.batch, g), "d_h": new(shape.batch, h),
                    "h_all": new(rows, h), "d_w_ih": new(g, inputs), "d_w_hh": new(g, h), "d_x": new(rows, inputs),
                })

    def forward(self) -> None:
        for b in self.layers:
            torch.mm(b["x"], b["w_ih"].t(), out=b["xp"])
            for _ in range(self.steps):
                torch.mm(b["h"], b["w_hh"].t(), out=b["gates"])

    def forward_backward(self) -> None:
        self.forward()
        for b in reversed(self.layers):
            for _ in range(self.steps - 1):  # the initial state (zeros) needs no gradient
                torch.mm(b["d_gates_t"], b["w_hh"], out=b["d_h"])
            torch.mm(b["d_gates"].t(), b["h_all"], out=b["d_w_hh"])
            torch.mm(b["d_gates"].t(), b["x"], out=b["d_w_ih"])
            if not b["first"]:  # the first layer's input needs no gradient
                torch.mm(b["d_gates"], b["w_ih"], out=b["d_x"])


class Subject:
    """One cell built for one shape, with its input and the two functions that are timed."""

    def __init__(self, name: str, shape: Shape, device: torch.device, timer: Timer, precision: str = "32"):
        self.name, self.shape, self.device, self.precision = name, shape, device, precision
        self.spec = CELLS.get(name)
        torch.manual_seed(0)
        if shape.scan:
            from cells.scan2d import SCANS

            self.cell = SCANS[shape.scan](name, shape.input_size, shape.hidden_size).to(device)
            self.x = torch.randn(shape.batch, shape.input_size, shape.steps, shape.steps, device=device)
        else:
            self.cell = build_cell(name, shape.input_size, shape.hidden_size, shape.layers,
                                   shape.directions == 2).to(device)
            self.x = torch.randn(shape.batch, shape.steps, shape.input_size, device=device)
        self.params = list(self.cell.parameters())
        self.first_call_s = timer.once(self.forward_backward)  # compilation and other one-time set-up
        self.forward()

    def forward(self) -> None:
        with torch.no_grad(), autocast(self.precision, self.device.type):
            self.cell(self.x)

    def output(self) -> torch.Tensor:
        out = self.cell(self.x)
        return out if self.shape.scan else out[0]  # a cell answers (output, state)

    def forward_backward(self) -> None:
        with autocast(self.precision, self.device.type):
            output = self.output()
        output.float().sum().backward()
        for p in self.params:
            p.grad = None

    def memory(self) -> tuple[int, str]:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.forward_backward()
            return torch.cuda.max_memory_allocated(self.device), "cuda allocator peak"
        with SavedTensorBytes(self.params) as saved, autocast(self.precision, self.device.type):
            output = self.output()
        output.float().sum().backward()
        return saved.nbytes, "cpu: bytes saved for backward"

    def row(self, forward: list[float], forward_backward: list[float], warmup: int, repeats: int,
            floor: tuple[list[float], list[float]] | None) -> dict:
        forward_ms, forward_iqr = median_iqr(forward)
        step_ms, step_iqr = median_iqr(forward_backward)
        memory, kind = self.memory()
        shape = self.shape
        # a scan's products are convolutions: no matmul count, no floor
        flops = None if shape.scan else training_matmul_flops(shape, self.spec.architecture)
        return {
            "cell": self.name, "architecture": self.spec.architecture, "twin": self.spec.twin, "shape": shape.name,
            **{f"shape_{k}": v for k, v in asdict(shape).items() if k != "name"},
            "forward_ms": 1e3 * forward_ms, "forward_ms_iqr": 1e3 * forward_iqr,
            "forward_backward_ms": 1e3 * step_ms, "forward_backward_ms_iqr": 1e3 * step_iqr,
            # a scan's tokens are its pixels
            "tokens_per_s": shape.batch * shape.steps * (shape.steps if shape.scan else 1) / step_ms,
            "flops_per_s": None if flops is None else flops_per_second(flops, step_ms),
            "first_call_s": self.first_call_s, "memory_bytes": memory, "memory_kind": kind,
            "parameters": sum(p.numel() for p in self.params), "warmup": warmup, "repeats": repeats,
            "floor_forward_ms": None if floor is None else 1e3 * statistics.median(floor[0]),
            "floor_forward_backward_ms": None if floor is None else 1e3 * statistics.median(floor[1]),
        }


def run_speed(cells: list[str], shapes: list[Shape], device: str, store, warmup: int = 5, repeats: int = 100,
              report: Callable[[dict], None] = lambda row: None, precision: str = "32",
              starting: Callable[[str, Shape], None] = lambda name, shape: None,
              timing: Callable[[list[str], Shape], None] = lambda names, shape: None) -> list[dict]:
    """Measure every cell (and the fused twin of each, for the ratio) at every shape; store the rows."""
    import uuid
    from datetime import datetime, timezone

    from bench.allocator import keep_freed_memory
    from bench.environment import device_name, environment, git_revision

    session = uuid.uuid4().hex[:12]
    twins = [CELLS.get(c).twin for c in cells if CELLS.get(c).twin]

    def names_at(shape: Shape) -> list[str]:
        if shape.scan:  # one layer per gating: the cells of an architecture would time the same one
            by_architecture: dict[str, str] = {}
            for name in cells:
                by_architecture.setdefault(CELLS.get(name).architecture, name)
            return list(by_architecture.values())
        return list(dict.fromkeys(cells + twins))
    common = {"session": session, "git_revision": git_revision(), "precision": precision,
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    rows = []

    def finish(row):
        row = {**common, "measurement_id": uuid.uuid4().hex, **row}
        store.save(row, table="speed")
        rows.append(row)
        report(row)

    if device == "cuda" and not torch.cuda.is_available():
        for shape in shapes:
            for name in names_at(shape):
                finish({"status": "skipped", "cell": name, "shape": shape.name, "device": "cuda",
                        "error": "no CUDA device: torch.cuda.is_available() is False"})
        return rows
    torch_device = torch.device(device)
    keep_freed_memory()  # as in every run's process, before anything is timed (CPU; `environment` records it)
    set_backend_precision(precision)  # one setting for every cell, the floors and the peak
    timer = Timer(torch_device)
    peak = peak_matmul_flops(torch_device, timer, dtype=matmul_dtype(precision))
    env = environment(device)
    for shape in shapes:
        subjects = []
        for name in names_at(shape):
            base = {"cell": name, "shape": shape.name, "device": device_name(device), "environment": env,
                    "peak_flops_per_s": peak}
            starting(name, shape)
            try:
                subjects.append(Subject(name, shape, torch_device, timer, precision))
            except Exception as err:  # noqa: BLE001 - recorded, and the other cells go on
                finish({**base, "status": "failed", "error": f"{type(err).__name__}: {err}"})
        # no floor for a scan (convolutions) or a cell with no recurrent matmul (minGRU, minLSTM)
        floors = {} if shape.scan else {
            s.spec.architecture: MatmulFloor(s.spec.architecture, shape, torch_device, matmul_dtype(precision))
            for s in subjects if handwritten_class(s.spec.architecture).recurrent_weights}
        timed = subjects + list(floors.values())
        timing([s.name for s in timed], shape)
        # every cell of the shape (and the matmul floors) in turn, round by round: the ratios to
        # the twins compare like with like
        forward = dict(zip(timed, timer.interleaved([s.forward for s in timed], warmup, repeats)))
        forward_backward = dict(zip(timed, timer.interleaved([s.forward_backward for s in timed], warmup, repeats)))
        measured = {}
        for s in subjects:
            floor = floors.get(s.spec.architecture)
            measured[s.name] = s.row(forward[s], forward_backward[s], warmup, repeats,
                                     None if floor is None else (forward[floor], forward_backward[floor]))
        for name, result in measured.items():
            twin = CELLS.get(name).twin or name
            ratio = (result["forward_backward_ms"] / measured[twin]["forward_backward_ms"]) \
                if twin in measured and not shape.scan else None
            finish({**result, "status": "ok", "ratio_to_fused": ratio, "device": device_name(device),
                    "environment": env, "peak_flops_per_s": peak})
    return rows
