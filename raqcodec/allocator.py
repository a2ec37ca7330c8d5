"""The C allocator setting the `raq` command runs with: freed memory is kept for reuse (glibc on Linux only).

The transforms of a 768x512 image make tensors of 50 MB (128 channels at half resolution). glibc serves a block
over its mmap threshold (32 MB at most) with fresh pages from the system and gives them back on free, so each
such tensor pays its page faults again: on the project's 2-core KVM machine (AVX2, 2026-11-27), allocating and
filling 50 MB took 21.1 ms against 2.8 ms to fill it again. keep_freed_memory() makes glibc serve every block from
its heap and keep up to KEPT_BYTES of freed memory at the heap's top, so the next image reuses the same pages.

It changes how the whole process allocates, so the library never calls it on its own: the `raq` command does at
start, and a program that codes many images may (raqcodec.keep_freed_memory()). The cost is memory: a heap
fragments where mmap'd blocks would not. Measured with benchmarks/large_image.py (peak RSS, one process each),
a 1280x960 photo took 953 / 971 MB to compress / decompress against 910 / 881 MB, but a 4000x3000 image 2360 /
1604 MB against 1551 / 1427 MB. So within image_memory() (codec.encode and codec.decompress) an image of more
than LARGE_IMAGE_PIXELS is coded with glibc's default behaviour, and the setting comes back after it: the
4000x3000 image then took 1548 / 1282 MB.
"""
from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD = 65536, 128 * 1024  # glibc's defaults
KEPT_BYTES = 1 << 30  # freed memory at the heap's top that glibc keeps instead of returning it to the system
LARGE_IMAGE_PIXELS = 4_000_000  # images above this are coded with glibc's default setting (image_memory)

_kept = False  # whether this process asked for keep_freed_memory() and glibc took it


def _mallopt():
    """glibc's mallopt, or None off Linux or where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def _set(mmap_max: int, trim_threshold: int) -> bool:
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_MMAP_MAX, mmap_max)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def keep_freed_memory() -> bool:
    """Set glibc's malloc to serve large blocks from its heap and keep freed memory; True if it took effect.

    Process-wide and harmless to repeat. False, changing nothing, off Linux or where the C library has no
    mallopt. A block glibc cannot get from its heap still comes from mmap (glibc's own fallback)."""
    global _kept
    _kept = _set(0, KEPT_BYTES)
    return _kept


@contextmanager
def image_memory(pixels: int) -> Iterator[None]:
    """Code an image of `pixels` pixels inside this block: in a process that keeps freed memory, an image of
    more than LARGE_IMAGE_PIXELS is coded with glibc's default setting (large blocks mmap'd and returned), which
    is restored afterwards. Elsewhere nothing changes."""
    if not (_kept and pixels > LARGE_IMAGE_PIXELS):
        yield
        return
    _set(_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
    try:
        yield
    finally:
        _set(0, KEPT_BYTES)
