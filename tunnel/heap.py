"""Give the start-up's freed heap back to the system. Importing asyncssh and cryptography
unmarshals and builds far more than it keeps; glibc holds what was freed in its arenas, where
it counts in the daemon's resident size until reused. One malloc_trim once the imports are
done returned 1.3 MiB (bench/memory.py: idle RSS 41.4 -> 40.1 MiB)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys


def release_free_heap() -> None:
    """Collect the import-time cycles, then malloc_trim(0) where the C library has it
    (glibc); elsewhere only the collection."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    trim = getattr(libc, "malloc_trim", None)  # musl has none
    if trim is not None:
        trim(0)
