"""Our own proxy, `tunnel serve`, run as a real process with its config and audit log kept."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.net import free_port
from testbed.services.base import Service


def tunnel_argv() -> list[str]:
    exe = shutil.which("tunnel", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "tunnel.cli"]


class TunnelProxy(Service):
    """`config_body` is the TOML without [proxy].listen/audit_log, which this class sets."""

    def __init__(self, workdir: Path, config_body: str, port: int | None = None,
                 host: str = "127.0.0.1", prefix: Sequence[str] = (),
                 proxy_extra: str = "") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.host, self.port = host, port or free_port(host)
        self.audit_path = workdir / "audit.jsonl"
        self.config_path = workdir / "tunnel.toml"
        self.config_path.write_text(
            "[proxy]\n"
            f'listen = ["{host}:{self.port}"]\n'
            f'audit_log = "{self.audit_path}"\n'
            f"{proxy_extra}\n{config_body}"
        )
        super().__init__(f"tunnel:{self.port}", [*tunnel_argv(), "serve", "-c",
                         str(self.config_path)], workdir / "tunnel.log",
                         ready=(host, self.port), prefix=prefix)

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"
