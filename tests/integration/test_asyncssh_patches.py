"""The proxy's patches to asyncssh (tunnel/ignore.py, tunnel/window.py), against real sshd."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

import tunnel.ssh  # noqa: F401  (importing it installs the patches)
from testbed.net import free_port
from testbed.services.sshd import Sshd

from .conftest import require


@pytest.fixture(scope="module")
def cbc_sshd(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Iterator[Sshd]:
    """sshd that also offers aes128-cbc (OpenSSH no longer does by default)."""
    require()
    server = Sshd(tmp_path_factory.mktemp("sshd-cbc"), free_port(), authorized_keys=[keys],
                  extra_config=["Ciphers +aes128-cbc"]).start()
    yield server
    server.stop()


async def packets_per_request(server: Sshd, keys: Path, tmp_path: Path, cipher: str) -> int:
    """How many SSH packets one global request (with its reply awaited) costs the sender:
    the connection's send sequence number counts every packet, IGNOREs included."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line())
    async with asyncssh.connect("127.0.0.1", server.port, username="root",
                                client_keys=[str(keys)], known_hosts=str(known_hosts),
                                encryption_algs=[cipher]) as conn:
        counts = []
        for _ in range(3):
            before = conn._send_seq
            await conn._make_global_request(b"keepalive@openssh.com")
            counts.append(conn._send_seq - before)
        return max(counts)


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                                    "aes128-ctr"])
def test_no_ignore_packet_before_each_packet_under_a_modern_cipher(
        cbc_sshd: Sshd, keys: Path, tmp_path: Path, cipher: str) -> None:
    assert asyncio.run(packets_per_request(cbc_sshd, keys, tmp_path, cipher)) == 1


def test_cbc_keeps_its_ignore_packet(cbc_sshd: Sshd, keys: Path, tmp_path: Path) -> None:
    """The positive control: under CBC the IGNORE is sent, and the count above sees it."""
    assert asyncio.run(packets_per_request(cbc_sshd, keys, tmp_path, "aes128-cbc")) == 2

