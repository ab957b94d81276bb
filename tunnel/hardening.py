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
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d; cores are still off",
                    ctypes.get_errno())
