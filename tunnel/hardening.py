"""Keep the daemon's memory to itself, as ssh-agent does: passwords pass through it (held
only until sent, but Python does not wipe freed strings), so no core file may be written
and no other process of the same user may ptrace it or read /proc/PID/mem."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource
import sys

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def protect_process_memory() -> None:
    """No core dumps (RLIMIT_CORE 0, hard limit too, so nothing in the process can raise
    it back) and, on Linux, not dumpable: which also forbids ptrace by the same user."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = linux_libc()
    if libc is not None and libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d; cores are still off",
                    ctypes.get_errno())


def linux_libc() -> ctypes.CDLL | None:
    """The C library, with errno kept for ctypes.get_errno(); None off Linux, where the
    calls made through it (prctl, malloc_trim) do not exist."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
