"""The element-wise part of a compiled LSTM forward loop alone, at the MNIST-row shape.

    python benchmarks/lstm_elementwise.py

`rnnbench speed` gives the matmul floor of a hand-written loop; this gives the other part of a
compiled LSTM: the gate equations of `cells/lstm.py` with the recurrent matmul replaced by a
fixed tensor, 28 steps compiled by TorchInductor as `lstm_compiled` compiles them. Together the
two say how close a loop of torch ops can come to a fused kernel.
"""

from __future__ import annotations

import statistics
import time

import torch

BATCH, STEPS, HIDDEN = 64, 28, 128


def loop(xp, h_projection, c):
    outputs = []
    for xp_t in xp.unbind(1):
        i, f, g, o = (xp_t + h_projection).chunk(4, 1)  # the matmul h @ W_hh^T left out
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        outputs.append(torch.sigmoid(o) * torch.tanh(c))
    return torch.stack(outputs, 1)


def median_ms(fn, warmup=10, repeats=100):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - begin)
    return 1e3 * statistics.median(samples)


def main():
    compiled = torch.compile(loop, fullgraph=True, dynamic=False)
    xp = torch.randn(BATCH, STEPS, 4 * HIDDEN)
    h_projection = torch.randn(BATCH, 4 * HIDDEN)
    c = torch.zeros(BATCH, HIDDEN)

    def forward():
        with torch.no_grad():
            compiled(xp, h_projection, c)

    print(f"element-wise part of the LSTM loop, B={BATCH} T={STEPS} H={HIDDEN}, {torch.get_num_threads()} threads:")
    print(f"  forward {median_ms(forward):.2f} ms (median of 100 calls)")


if __name__ == "__main__":
    main()
