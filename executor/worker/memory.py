"""Give a worker's large payloads back to the OS once they are freed.

glibc serves allocations over its mmap threshold (128 KiB at start) with their own mappings, which
``free`` unmaps at once. But the threshold is *dynamic*: each time such a block is freed it rises
to that block's size (up to 32 MiB), and from then on megabyte payloads (step outputs, errors,
events) come from the heap, whose freed pages mostly stay with the process. After a burst of
large payloads a worker's RSS stayed ~45% above where it started (bench/hostile_rss.py); with the
threshold pinned it comes back to within ~5%. Pinning it (``mallopt(M_MMAP_THRESHOLD, ...)``, as
the ``MALLOC_MMAP_THRESHOLD_`` environment variable would) also turns the dynamic rise off.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD", "pin_mmap_threshold"]

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 128 * 1024


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold; False where there is no glibc (other libcs, other systems)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
