"""Give the start-up's freed heap back to the system. Importing asyncssh and cryptography
unmarshals and builds far more than it keeps; glibc holds what was freed in its arenas, where
it counts in the daemon's resident size until reused. A collection and one malloc_trim once
the listeners are up returned 1.2-1.3 MiB (bench/memory.py, idle RSS)."""

from __future__ import annotations

import gc

from tunnel.hardening import linux_libc


def release_free_heap() -> None:
    """Collect the import-time cycles, then malloc_trim(0) where the C library has it
    (glibc); elsewhere only the collection."""
    gc.collect()
    trim = getattr(linux_libc(), "malloc_trim", None)  # musl has none
    if trim is not None:
        trim(0)
