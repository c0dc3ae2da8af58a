"""Keeps a long-lived runner's resident memory flat: glibc's malloc, left to itself, lets it creep up with every run.

glibc serves an allocation of 128 KiB or more with a mapping of its own, returned to the system when freed; but
each time such a block is freed it raises that threshold to the block's size (up to 32 MiB), and the heap's trim
threshold to twice that. Later blocks of that size then come from the heap, where they fragment it and stay
resident, and free memory at the heap's top is kept up to the new trim threshold. Setting both thresholds back to
glibc's starting values fixes them and turns that adjustment off, as `MALLOC_MMAP_THRESHOLD_` in the environment
would have from the start. Over 2,000 `hello` executions (README, "Worker performance"), the runner's glibc arenas
grew 7 MiB without it and 1.5 MiB with it; its resident memory 10 MiB and 5 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

# from glibc's malloc.h, with glibc's starting values
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
THRESHOLD = 128 * 1024

logger = logging.getLogger(__name__)


def fix_malloc_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds for this process. Returns whether they were set (False off glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError) as err:
        logger.debug("could not set malloc's thresholds: %s", err)
        return False
