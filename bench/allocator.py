"""Freed memory kept in the process on CPU, so that a training step does not page-fault its tensors in.

torch's CPU tensors come from the C library's malloc. glibc's malloc serves a large block (above a
threshold that starts at 128 KiB and follows the sizes freed, up to 32 MiB) by mapping fresh pages
from the kernel and unmaps them when the block is freed, and gives the top of its heap back to
the kernel beyond a trim threshold. A training step allocates and frees the same large
activations every time (the translation task's attention scores, (B, T, S, A), reach 80 MB on its
longest batches), so every step page-faults them in again, and the kernel zeroes each page:
docs/results.md counts them. `keep_freed_memory` raises both thresholds
(`mallopt`), so that freed blocks go back to malloc's free lists and the next step reuses them;
the process keeps its peak heap until it exits. A caching allocator for CPU tensors would do the
same inside torch, but torch has none that Python can switch on; jemalloc or tcmalloc, preloaded,
would too, but need an install and an environment variable set before the process starts.

Elsewhere (not glibc: macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap, reused once freed
TRIM_THRESHOLD = (1 << 31) - 1  # the most an int holds: the heap's top goes back only beyond 2 GiB
TOP_PAD = 64 << 20  # the heap grows 64 MiB beyond a request at a time: fewer brk calls


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse; True if it took (once per process)."""
    try:
        libc = ctypes.CDLL(None)  # the symbols the process has loaded, the C library's among them
    except OSError:
        return False
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):  # glibc's own
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
