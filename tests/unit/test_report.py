"""The scenario report's pure parts: the topology as Graphviz source (link colours from the
captures, one red arrow per bypassing host pair) and the HTML around it."""

from __future__ import annotations

from pathlib import Path

from testbed.capture import Verdict
from testbed.report import BYPASS_COLOUR, LINK_STYLES, render, topology_graph
from testbed.runner import Outcome, Result
from testbed.scenario import load

ROOT = Path(__file__).resolve().parents[2]


def result_of(name: str, links: dict[str, str], bypass: list[tuple[str, str, str]],
              out_dir: Path | None = None) -> Result:
    scenario = load(ROOT / "scenarios" / f"{name}.toml")
    outcomes = [Outcome("step1", "pass", Verdict("transfer", "curl active", True, "upload")),
                Outcome("no_bypass", "fail", Verdict("no_bypass", "lan", False,
                                                     "2 client<->FTP flows: <a>"))]
    return Result(scenario, outcomes, 1.5, out_dir, links=links, bypass=bypass)


def test_links_take_the_colour_of_what_their_capture_showed() -> None:
    result = result_of("ftp-tunnel-third-host", {"lan": "encrypted", "dmz": "clear"}, [])
    source = topology_graph(result).source
    assert f'label="lan: encrypted" color="{LINK_STYLES["encrypted"][0]}"' in source
    assert f'label="dmz: clear" color="{LINK_STYLES["clear"][0]}"' in source
    assert "bypass" not in source
    assert "proxy: tunnel" in source and "sshd :22" in source and "10.77.2.2" in source


def test_a_bypass_is_one_red_arrow_per_host_pair_naming_its_links() -> None:
    flows = [("lan", "client", "ftp"), ("lan", "ftp", "client"), ("dmz", "ftp", "client")]
    result = result_of("ssh-D-active-bypass", {"lan": "clear", "dmz": "clear"}, flows)
    source = topology_graph(result).source
    assert source.count(BYPASS_COLOUR) == 2  # the edge and its label: one arrow
    assert 'label="bypass, seen on dmz, lan"' in source and "dir=both" in source


def test_an_uncaptured_link_is_drawn_dashed() -> None:
    source = topology_graph(result_of("ftp-tunnel-third-host", {}, [])).source
    assert source.count("style=dashed") == 2 and "not captured" in source


def test_the_page_escapes_what_it_shows_and_links_kept_files(tmp_path: Path) -> None:
    kept = tmp_path / "out" / "run1"
    (kept / "pcap").mkdir(parents=True)
    (kept / "pcap" / "lan.pcap").write_bytes(b"")
    result = result_of("ssh-D-active-bypass", {"lan": "clear"}, [], out_dir=kept)
    page = render([result], {"ssh-D-active-bypass": "<svg>drawn</svg>"}, tmp_path / "report")
    assert "<svg>drawn</svg>" in page
    assert "2 client&lt;-&gt;FTP flows: &lt;a&gt;" in page  # details are escaped
    assert 'href="../out/run1/pcap/lan.pcap"' in page
    assert "1 of 1 scenarios passed" in page  # expected fail, got fail: a pass
    assert "<script" not in page and "http" not in page.replace(
        "http-equiv", "")  # opens from disk, loads nothing
