"""Keep freed memory in the process instead of handing it back to the operating system.

glibc's malloc serves a block above its mmap threshold (128 KB at first; it rises to the
size of a freed block, so it moves only as far as the blocks seen so far) with fresh pages
from the kernel and returns them when the block is freed, and it trims free memory at the
top of its heap. A training step allocates and frees the same activation and gradient
buffers, megabytes each, every step, and paid the kernel's page faults and zeroing again
each time (README, "Where the time goes", measures it). Raising the mmap threshold to
glibc's largest (32 MB) and the trim threshold to the largest mallopt takes lets malloc
reuse the freed blocks; the price is that resident memory stays at its high-water mark.
"""

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
TRIM_THRESHOLD = 2**31 - 1  # an int, as mallopt takes


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks for reuse; False where that is not possible
    (not Linux, or a C library without mallopt)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
