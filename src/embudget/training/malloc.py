"""Keep freed memory in the process (glibc), so that training steps stop page-faulting.

A training step allocates and frees a few dozen tensors of 1-5 MB (a 10,000-row batch at
d = 128 is 5 MB). glibc serves blocks over its mmap threshold (128 KiB, rising adaptively) with
fresh ``mmap``s and trims the heap top back to the kernel on free, so every step touched new
pages: ~3,200 minor page faults per Last.fm LightGCN step. Raising the mmap threshold to its
64-bit maximum (32 MiB) and the trim threshold keeps those blocks in the heap for reuse; the
faults fall ~5x and the step gets ~15 % faster (BENCHMARKS.md, "Small runs"). No number
changes; the cost is that the process keeps up to the trim threshold of freed memory.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
MMAP_THRESHOLD = 32 << 20
#: freed memory kept at the heap top before it is returned to the kernel
TRIM_THRESHOLD = 512 << 20

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Apply the thresholds once per process (glibc on Linux only); whether they are set."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):  # not glibc (e.g. musl)
                return False
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            _applied = bool(
                mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
    return _applied
