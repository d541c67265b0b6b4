"""Hand-written cells with their time loop compiled by `torch.compile` (TorchInductor).

The gate equations are those of the hand-written cell each one is made from (`compiled_variant`,
for every registered `*_handwritten` cell), so the parity tests hold these cells to their fused
twins too. What changes is speed: the whole unrolled loop of one layer and direction becomes one compiled graph, forward and backward.
Compiling costs seconds, once per input shape, and grows with the number of unrolled steps; so
a sequence longer than `CHUNK` steps runs as a few calls of one graph over equal pieces of
it (at most two graphs: the pieces and a shorter last one), which bounds the compile time
whatever the length. `rnnbench speed` reports the first call's time in its own column.

On a GPU the loop is many small kernels, each with a launch cost; there the graph is compiled
with `mode="reduce-overhead"`, which records it as CUDA graphs (torch's CUDA graph trees) and
replays them, one launch per piece.
"""

from __future__ import annotations

import math

import torch

from cells.base import HandwrittenCell


def _raise_recompile_limit() -> None:
    """Every (shape, direction, mask) is its own graph; dynamo's default limit of 8 per code object
    would silently fall back to eager in a long matrix or in the parity tests. Done on first use:
    importing torch._dynamo costs a second, which `import cells` should not pay."""
    import torch._dynamo

    config = torch._dynamo.config
    config.cache_size_limit = max(config.cache_size_limit, 256)
    if hasattr(config, "recompile_limit"):
        config.recompile_limit = max(config.recompile_limit, 256)


# The most steps one compiled graph unrolls: 28-step rows run as one piece, the 100 steps of the
# fastrnns shape as 4 of 25, a 784-step pixel scan as 24 of 32 and one of 16.
CHUNK = 32

# torch.compile's mode per device type: CUDA graphs where kernel launches dominate
COMPILE_MODE = {"cuda": "reduce-overhead"}


def pieces(steps: int, chunk: int | None = None) -> list[int]:
    """`steps` cut into as few pieces of at most `chunk` (default `CHUNK`) as can be, all equal but the last."""
    chunk = chunk or CHUNK
    if steps <= chunk:
        return [steps]
    size = math.ceil(steps / math.ceil(steps / chunk))
    return [size] * (steps // size) + ([steps % size] if steps % size else [])


class CompiledScan:
    """Mixin: `scan` (the time loop of `HandwrittenCell`) runs as a compiled graph, piece by piece."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._compiled_scans = {}

    def compiled_scan(self, device_type: str):
        """The compiled loop for a device type (compiled lazily: the mode depends on the device)."""
        mode = COMPILE_MODE.get(device_type)
        if mode not in self._compiled_scans:
            _raise_recompile_limit()
            self._compiled_scans[mode] = torch.compile(HandwrittenCell.scan.__get__(self), fullgraph=True,
                                                       dynamic=False, mode=mode)
        return self._compiled_scans[mode]

    def scan(self, xp, state, w_hh, b_hh, mask):
        scan = self.compiled_scan(xp.device.type)
        sizes = pieces(xp.shape[1])
        if len(sizes) == 1:
            return scan(xp, state, w_hh, b_hh, mask)
        outputs = []
        # split, not slicing in a loop: its backward is one concatenation
        masks = mask.split(sizes, dim=1) if mask is not None else [None] * len(sizes)
        for xp_piece, mask_piece in zip(xp.split(sizes, dim=1), masks):
            output, state = scan(xp_piece, state, w_hh, b_hh, mask_piece)
            outputs.append(output)
        return torch.cat(outputs, dim=1), state

    # a compiled function does not pickle (DDP spawn, deepcopy): compile again on the other side
    def __getstate__(self):
        state = super().__getstate__()
        state["_compiled_scans"] = {}
        return state


def compiled_variant(cls: type[HandwrittenCell]) -> type[HandwrittenCell]:
    """The compiled class of a hand-written cell: its gate equations, its loop compiled. Made, not
    written, for every hand-written cell that `register_cell` registers (`lstm_handwritten` gives
    `lstm_compiled`); kept in this module's namespace under its name, so that it pickles."""
    name = cls.__name__.replace("Handwritten", "") + "Compiled"
    made = globals().get(name)
    if made is None or made.__bases__ != (CompiledScan, cls):
        made = type(name, (CompiledScan, cls), {"__module__": __name__, "__qualname__": name,
                                                "__doc__": f"{cls.__name__} with its time loop compiled."})
        globals()[name] = made
    return made
