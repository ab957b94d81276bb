"""The daemon's heap: fixed allocator thresholds for its buffers, and the start-up's freed
heap given back to the system.

Thresholds. Every transfer allocates buffers of 32 KiB to 1 MiB per loop pass (a 256 KiB
read from a socket, asyncssh's bytearray copy of each write, a corked burst joined). glibc
serves an allocation above M_MMAP_THRESHOLD (128 KiB at first) with its own mmap, and gives
it back with munmap on free: 64 fresh pages, each faulted in, per 256 KiB. Its dynamic
threshold rises once such a block is freed, but trimming and the daemon's history decide
when, so the same build ran a 256 MiB STOR with 220,000 minor faults and 60-78 ticks of
system time in one process and with 5 faults in another (bench/ab.py allocator). Fixed
thresholds keep buffers up to 4 MiB in the heap and up to 16 MiB of free heap top
resident, so a burst's memory is reused rather than faulted in again.

After a burst. With buffers kept in the heap, a burst of transfers leaves free blocks
between live ones, and glibc gives back on its own only what is free at the heap's top: after
10 parallel 100 MiB uploads a daemon kept 73 MiB (ftp-tunnel) or 110 MiB (ftp-sftp) where a
malloc_trim(0) took it to 44 (a helper's test; glibc's own thresholds kept 86 for ftp-sftp).
So `QuietTrim` runs malloc_trim(0), which also returns the free pages inside the heap, once
no session has ended for `[proxy] heap_trim_after` seconds (30). Not sooner: trimming 2 s
after sessions ended, between rounds of 50 uploads at once, gave back memory the next round
faulted in again (397,892 minor faults a round against 133,726, 3.11 CPU s/GiB against
2.29, bench/ab.py quiet-trim). A busy daemon keeps its working set; a quiet one returns it.

Start-up. Importing asyncssh and cryptography unmarshals and builds far more than it keeps;
glibc holds what was freed in its arenas, where it counts in the daemon's resident size
until reused. A collection and one malloc_trim once the listeners are up returned 1.2-1.3
MiB (bench/memory.py, idle RSS)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from tunnel.hardening import linux_libc

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 16 << 20


def tune_allocator() -> bool:
    """Set glibc's thresholds (above); False where the C library has no mallopt (musl,
    other systems) or refuses them."""
    mallopt = getattr(linux_libc(), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _malloc_trim() -> Any:
    """glibc's malloc_trim; None where the C library has none (musl, other systems)."""
    return getattr(linux_libc(), "malloc_trim", None)


def release_free_heap() -> None:
    """Collect the import-time cycles, then malloc_trim(0) where the C library has it
    (glibc); elsewhere only the collection."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class QuietTrim:
    """malloc_trim(0) once `after` seconds have passed without a session ending (see
    above). Nothing where the C library has no malloc_trim, or with `after` 0."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._timer: asyncio.TimerHandle | None = None
        self.trims = 0

    def session_ended(self, after: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._trim is not None and after > 0:
            self._timer = asyncio.get_running_loop().call_later(after, self._run)

    def _run(self) -> None:
        self._timer = None
        if self._trim is not None:
            self._trim(0)
            self.trims += 1

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
