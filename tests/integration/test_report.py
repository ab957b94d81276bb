"""`testbed run --report`, looked at in a real browser: headless Chromium draws the page,
and the picture holds what the captures showed (the ssh -D active bypass: clear links and
a red bypass arrow), the verdict table, and links to files that exist."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from testbed import cli
from testbed.report import BYPASS_COLOUR, LINK_STYLES, browser, screenshot

from .conftest import require

ROOT = Path(__file__).resolve().parents[2]


def colour(text: str) -> tuple[int, int, int]:
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


def test_the_report_of_a_bypass_shows_it_in_a_browser(tmp_path: Path) -> None:
    require("chromium", "dot", "tcpdump")
    if os.geteuid() != 0:
        pytest.skip("the scenario needs network namespaces (root)")
    from PIL import Image

    folder = tmp_path / "report"
    code = cli.run([str(ROOT / "scenarios" / "ssh-D-active-bypass.toml")], None, False,
                   out=tmp_path / "out", report=folder)
    assert code == 0
    page = folder / "report.html"
    text = page.read_text()
    links = re.findall(r'href="([^"#]+)"', text)
    assert any(link.endswith("lan.pcap") for link in links)
    assert all((folder / link).is_file() for link in links)  # every link leads to a file

    exe = browser()
    assert exe is not None
    dom = subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "<svg" in dom and "bypass, seen on" in dom and "no_bypass" in dom

    screenshot(page, tmp_path / "report.png", 1100, 950)  # the page draws whole
    # The picture alone (the page's legend holds every colour): as the browser drew it.
    png = tmp_path / "picture.png"
    screenshot(folder / "ssh-D-active-bypass.svg", png, 900, 300)
    pixels = {rgb for _, rgb in Image.open(png).convert("RGB").getcolors(1 << 24) or []}
    assert colour(BYPASS_COLOUR) in pixels  # the red arrow was drawn
    assert colour(LINK_STYLES["clear"][0]) in pixels  # ssh -D's links: clear
    assert colour(LINK_STYLES["encrypted"][0]) not in pixels  # and none encrypted
