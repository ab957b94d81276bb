"""The loop's exception handler (tunnel/loopguard.py): asyncio's unguarded shutdown() after
a client left is one INFO line; anything else still reaches asyncio's default handler."""

from __future__ import annotations

import errno
import logging
from typing import Any

import pytest

from tunnel import loopguard


class _Loop:
    def __init__(self) -> None:
        self.defaulted: list[dict[str, Any]] = []

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.defaulted.append(context)


def _raise_from(function_name: str, exc: BaseException) -> BaseException:
    namespace: dict[str, Any] = {}
    exec(f"def {function_name}(exc):\n    raise exc\n", namespace)
    try:
        namespace[function_name](exc)
    except BaseException as raised:  # what the loop would hand over
        return raised
    raise AssertionError("unreachable")


def test_a_client_gone_before_the_eof_is_one_info_line(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    loop = _Loop()
    exc = _raise_from("_write_ready", OSError(errno.ENOTCONN, "Transport endpoint is not "
                                                               "connected"))
    with caplog.at_level(logging.INFO, logger="tunnel.server"):
        loopguard.handle(loop, {"message": "Exception in callback", "exception": exc})  # type: ignore[arg-type]
    assert loop.defaulted == []
    assert "left before its end of file" in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize(("function", "exc"), [
    ("_write_ready", ValueError("a bug")),                     # not an OSError
    ("_write_ready", OSError(errno.EBADF, "Bad file")),        # not a client leaving
    ("data_received", OSError(errno.ENOTCONN, "not connected")),  # not asyncio's shutdown
])
def test_everything_else_reaches_the_default_handler(function: str, exc: BaseException) -> None:
    loop = _Loop()
    context = {"message": "Exception in callback", "exception": _raise_from(function, exc)}
    loopguard.handle(loop, context)  # type: ignore[arg-type]
    assert loop.defaulted == [context]
