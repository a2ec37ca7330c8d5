"""The C allocator setting the `raq` command runs with: freed memory is kept for reuse (glibc on Linux only).

The transforms of a 768x512 image make tensors of 50 MB (128 channels at half resolution). glibc serves a block
over its mmap threshold (32 MB at most) with fresh pages from the system and gives them back on free, so each
such tensor pays its page faults again: on the project's 2-core KVM machine (AVX2, 2026-11-27), allocating and
filling 50 MB took 21.1 ms against 2.8 ms to fill it again. keep_freed_memory() makes glibc serve every block from
its heap and keep up to KEPT_BYTES of freed memory at the heap's top, so the next image reuses the same pages.

It changes how the whole process allocates, so the library never calls it on its own: the `raq` command does at
start, and a program that codes many images may (raqcodec.keep_freed_memory()). The cost is memory the process
keeps after a large image instead of returning it.
"""
from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
KEPT_BYTES = 1 << 30  # freed memory at the heap's top that glibc keeps instead of returning it to the system


def keep_freed_memory() -> bool:
    """Set glibc's malloc to serve large blocks from its heap and keep freed memory; True if it took effect.

    Process-wide and harmless to repeat. False, changing nothing, off Linux or where the C library has no
    mallopt. A block glibc cannot get from its heap still comes from mmap (glibc's own fallback)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, KEPT_BYTES))
