"""Memory before it runs out: a run whose weights, gradients and optimiser state alone cannot fit
in the memory at hand is refused before it trains, and a run that drives the machine's available
memory under a floor is stopped at the end of its step; both are stored as failed runs whose
error names the figures. `rnnbench run --no-memory-guard` (RNNBENCH_NO_MEMORY_GUARD=1) turns both
off, for users who know better (a machine that swaps, a cgroup the kernel reports otherwise).

The floor is checked between steps: one step that allocates more than is left at once is not
stopped by it (the kernel's OOM killer then ends the process, and the same command resumes the
run from its last epoch).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch

GIB = 2**30
FLOOR_SHARE = 0.05  # stop a run when less than this share of the machine's memory is available...
FLOOR_MIN = GIB // 2  # ...or less than this, whichever is more
OPTIMIZER_STATES = {"adamw": 2, "rmsprop": 1}  # tensors of state per weight


class MemoryGuardError(RuntimeError):
    """A run that does not fit in memory (the message gives the estimate and what is available)."""


def enabled() -> bool:
    return os.environ.get("RNNBENCH_NO_MEMORY_GUARD", "") in ("", "0")


def cpu_memory() -> tuple[int, int]:
    """(available, total) bytes of this machine's memory, from /proc/meminfo; (0, 0) where unknown."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return int(fields["MemAvailable"].split()[0]) * 1024, int(fields["MemTotal"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0, 0


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def static_bytes(network: torch.nn.Module, optimizer: str) -> int:
    """Weights, their gradients and the optimiser's state: what training holds whatever the batch."""
    weights = sum(p.numel() * p.element_size() for p in network.parameters() if p.requires_grad)
    return weights * (2 + OPTIMIZER_STATES.get(optimizer, 2))


def check_fits(network: torch.nn.Module, optimizer: str, accelerator: str) -> None:
    """Refuse a run whose static memory exceeds what the device has available."""
    if not enabled():
        return
    need = static_bytes(network, optimizer)
    if accelerator == "cuda":
        free, total = torch.cuda.mem_get_info()
        where = f"GPU memory ({torch.cuda.get_device_name()})"
    else:
        free, total = cpu_memory()
        where = "CPU memory"
    if total and need > free:
        raise MemoryGuardError(
            f"does not fit in memory: its weights, gradients and {optimizer} state alone take {_gib(need)}, and "
            f"{_gib(free)} of the {_gib(total)} of {where} are available (before any activations); a smaller "
            f"--hidden or --layers fits, or --no-memory-guard runs it anyway")


class MemoryWatch(L.Callback):
    """Stops the fit when the machine's available memory falls under the floor (CPU runs)."""

    def _check(self) -> None:
        available, total = cpu_memory()
        if not total:
            return
        floor = max(FLOOR_MIN, int(FLOOR_SHARE * total))
        if available < floor:
            rss = 0
            try:
                rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError):
                pass
            raise MemoryGuardError(
                f"stopped before the machine ran out of memory: {_gib(available)} of {_gib(total)} were available, "
                f"under the floor of {_gib(floor)}, with this process at {_gib(rss)}; a smaller --hidden or batch "
                "fits, or --no-memory-guard lets it go on")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._check()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._check()
