"""The machine and software a run ran on, stored with every result."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from pathlib import Path

import lightning
import torch

from bench.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def git_revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def device_name(accelerator: str) -> str:
    if accelerator == "cuda":
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {cpu_model()}"


def environment(accelerator: str) -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if accelerator == "cuda" else None,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        # every run's process sets it (bench.module): steps reuse freed memory instead of faulting it in
        "malloc": "glibc, freed memory kept" if keep_freed_memory() else "as the platform's comes",
    }
