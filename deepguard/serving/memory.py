"""Give freed frame memory back to the operating system (glibc), so RSS falls back after a load peak.

Why: frames are large, short-lived buffers (a 640x360 RGB frame is 675 KiB). glibc serves blocks over its
mmap threshold with mmap and unmaps them on free, but its *dynamic* threshold rises to the size of each
freed mmapped block, after which frames come from the heap arenas and a load peak stays resident (the issue
saw 1.6 GB during a run and 775 MB after it). Fixing the threshold stops that adjustment; ``trim()`` after
the last stream ends returns what the arenas still hold. Both are no-ops where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger("deepguard.server.memory")

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
# Blocks above this are mmapped (frames); smaller ones (224 px crops, 147 KiB) stay in the arenas.
MMAP_THRESHOLD = 256 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
        return lib if lib is not None and hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None
    except OSError:
        return None


@functools.cache
def pin_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold (once per process); True if it was set."""
    lib = _libc()
    ok = bool(lib is not None and lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    log.debug("mmap threshold pinned at %d bytes: %s", MMAP_THRESHOLD, ok)
    return ok


def trim() -> bool:
    """Return free heap memory to the OS (``malloc_trim(0)``); True if anything was released."""
    lib = _libc()
    return bool(lib is not None and lib.malloc_trim(0))


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc (0 where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
