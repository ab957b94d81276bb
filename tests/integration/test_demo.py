"""`make demo` is the first thing a newcomer runs: both demos must pass, as printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.backends import netns

from .conftest import require

pytestmark = pytest.mark.integration
TESTBED = [str(Path(sys.executable).parent / "testbed")]


def test_demo_in_namespaces() -> None:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    got = subprocess.run([*TESTBED, "demo"], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.count("[PASS]") == 10 and "[FAIL]" not in got.stdout


def test_demo_on_loopback() -> None:
    require("curl")
    got = subprocess.run([*TESTBED, "demo", "--loopback"], capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.count("[PASS]") == 6 and "[FAIL]" not in got.stdout
