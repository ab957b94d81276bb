"""House rule 1: the protocol modules are pure. They import no asyncio, socket or asyncssh."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PURE = ["socks.py", "rules.py", "config.py", "failures.py", "relay.py", "errors.py", "ftp.py",
        "addresses.py", "ftp_layer.py", "datachannels.py", "ftp_commands.py", "sftp_layer.py",
        "sftp_map.py", "sftp_ops.py"]
FORBIDDEN = {"asyncio", "socket", "asyncssh", "selectors", "ssl"}
TUNNEL = Path(__file__).resolve().parents[2] / "tunnel"


@pytest.mark.parametrize("module", PURE)
def test_protocol_module_imports_no_io(module: str) -> None:
    tree = ast.parse((TUNNEL / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{module} imports {imported & FORBIDDEN}"
