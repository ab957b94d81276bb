"""asyncssh's orphaned parallel-request failures on a lost connection are one debug line,
not an error with a traceback (ftp_sftp._quiet_orphaned_reads); everything else still goes
to asyncio's handler."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh

from tunnel.ftp_sftp import _quiet_orphaned_reads


class _SFTPParallelIO:  # the name asyncssh's task coroutine carries
    async def _start_task(self) -> None:
        raise asyncssh.ConnectionLost("Connection lost")


async def _other() -> None:
    raise asyncssh.ConnectionLost("Connection lost")


def test_only_asyncssh_parallel_request_failures_are_quieted() -> None:
    loop = asyncio.new_event_loop()
    passed_on: list[dict[str, Any]] = []
    loop.default_exception_handler = passed_on.append  # type: ignore[method-assign]
    try:
        orphan = loop.create_task(_SFTPParallelIO()._start_task())
        other = loop.create_task(_other())
        loop.run_until_complete(asyncio.wait({orphan, other}))
        for task in (orphan, other):
            _quiet_orphaned_reads(loop, {"message": "Task exception was never retrieved",
                                         "exception": task.exception(), "future": task})
        assert [c["future"] for c in passed_on] == [other]
    finally:
        loop.close()
