"""The docker backend's image, built for real: every tool the testbed runs is in it, and an
unchanged image is reused, not rebuilt. Skips only when no Docker engine answers."""

from __future__ import annotations

import time

import pytest

from testbed import image

pytestmark = pytest.mark.integration

CHECKS = [
    ["/opt/fts-venv/bin/python", "-c", "import asyncssh, pyftpdlib, python_socks"],
    ["test", "-x", "/usr/sbin/sshd"],
    ["/usr/sbin/sshd", "-V"],
    ["test", "-d", "/run/sshd"],
    ["sh", "-c", "vsftpd -v 0>&1"],  # vsftpd writes its version to fd 0
    ["tcpdump", "--version"],
    ["curl", "--version"],
    ["lftp", "--version"],
    ["test", "-e", "/opt/ftp-ssh-tunnel/pkgs/proftpd-core/usr/sbin/proftpd"],
    ["test", "-e", "/opt/ftp-ssh-tunnel/pkgs/pure-ftpd/usr/sbin/pure-ftpd"],
]


@pytest.fixture(scope="module")
def engine() -> object:
    try:
        return image.client()
    except image.ImageError as exc:  # "no Docker engine (...)": tests/conftest.py knows it
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def ref(engine: object) -> str:
    return image.ensure_image(log=print)


def test_image_has_every_tool(engine: object, ref: str) -> None:
    failures = []
    for argv in CHECKS:
        container = engine.containers.run(ref, argv, detach=True)  # type: ignore[attr-defined]
        try:
            status = container.wait(timeout=60)["StatusCode"]
            output = container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)
        if status != 0:
            failures.append(f"{' '.join(argv)}: exit {status}: {output.strip()[-300:]}")
    assert not failures, "\n".join(failures)


def test_image_labels(engine: object, ref: str) -> None:
    labels = engine.images.get(ref).labels  # type: ignore[attr-defined]
    assert labels[image.LABEL] == "testbed"
    assert ref.endswith(":" + labels[image.INPUTS_LABEL][:16])


def test_unchanged_image_is_reused(engine: object, ref: str) -> None:
    before = engine.images.get(ref).id  # type: ignore[attr-defined]
    said: list[str] = []
    started = time.monotonic()
    again = image.ensure_image(log=said.append)
    seconds = time.monotonic() - started
    print(f"reuse: {seconds:.2f} s")
    assert again == ref
    assert engine.images.get(again).id == before  # type: ignore[attr-defined]
    assert not [line for line in said if "building" in line], said
    assert seconds < 30
