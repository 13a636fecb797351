"""Keep freed frame buffers in the process instead of handing them back to the kernel.

A 768x576 RGB frame is 1.3 MB: above glibc's default thresholds, every frame buffer is
mapped fresh and unmapped on free, so each of its pages faults again on the next frame.
Measured on 1 070 frames: 3.8 M minor page faults and 9 s of system time in a 28 s run;
with these settings 5.8 s, and 1.4x faster metrics per frame. Memory freed above
``TRIM_BYTES`` is still returned; glibc only (elsewhere a no-op).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters from <malloc.h>
MMAP_BYTES = 32 << 20  # buffers below this come from the heap and are reused
TRIM_BYTES = 256 << 20  # free memory at the heap's top kept for reuse, at most


def keep_frame_buffers(trim_bytes: int = TRIM_BYTES) -> bool:
    """Apply the settings (idempotent); False when the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, trim_bytes))
