"""Keep large freed buffers in the worker process instead of giving them back at once.

Each chest X-ray upload allocates tens of MB per request in blocks of megabytes: the
joined body (15 MB for a 3000 x 2500 radiograph), the decoder's and the reader's copy's
block sums, the stored read. glibc serves blocks that large with a fresh ``mmap`` and
returns them with ``munmap`` or a heap trim when freed; its adaptive thresholds follow
what was freed before, so depending on the order of the uploads the next request
touches new pages: 50 to 2,400 page faults per 15 MB upload, each a kernel entry and a
zeroed page, 2-4 CPU-ms per request in the event loop alone at the high end
(docs/performance.md). With a
fixed mmap threshold above those sizes and a high trim threshold, freed blocks stay in
the heap and are reused; the worker's memory stays at its peak use under load rather
than growing (nothing is kept that was not in use at once before).

glibc only (Linux): elsewhere :func:`keep_freed_memory` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed: blocks below it come from the heap
TRIM_THRESHOLD = 256 * 1024 * 1024  # free memory at the top of a heap kept up to this


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring) for this process.

    Returns:
        True when both were set; False on another C library or when glibc refused.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not done:
        logger.warning("glibc refused the malloc thresholds; large buffers are not kept")
    return done
