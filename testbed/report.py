"""`testbed run --report DIR`: one HTML page for a run, a picture per scenario.

Each scenario gets a drawing of its topology made by Graphviz (the `graphviz` package and
Debian's `dot`): hosts with their addresses and services, the proxy on its host, each link
coloured by what its capture showed, and every flow between the client and the FTP host
drawn as a red arrow, with the link it was seen on. Under it: the verdict table, each
step's line, and links to the kept pcaps and logs. The page has no script and loads
nothing from outside: it opens from disk, in a browser on a machine without a network.

`render` is pure (results in, HTML out); `write` puts it and the pictures on disk.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

import graphviz

from testbed.runner import Result

# What a link's capture showed -> (colour, legend). Colour-blind safe: blue and orange,
# and the word is on the link too.
LINK_STYLES = {
    "encrypted": ("#1f6fb4", "encrypted (SSH banner, no secret in clear)"),
    # Bluish green (Okabe-Ito): protected like "encrypted", but by FTPS, not SSH.
    "tls": ("#009e73", "TLS (FTPS: AUTH TLS, then TLS records; no secret in clear)"),
    "clear": ("#d55e00", "clear (a password, file or directory name readable)"),
    "other": ("#7a7a7a", "traffic, neither SSH nor a secret"),
    "silent": ("#b0b0b0", "captured, no packet"),
    "not captured": ("#b0b0b0", "not captured"),
}
BYPASS_COLOUR = "#c00000"

STYLE = """
body { font-family: "DejaVu Sans", sans-serif; margin: 2em; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; font-size: 0.9em; }
.pass { color: #0a6b2a; font-weight: bold; } .fail { color: #c00000; font-weight: bold; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: 2em; height: 0.35em; vertical-align: middle;
          margin-right: 0.4em; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
code { font-size: 0.9em; }
"""


def topology_graph(result: Result) -> graphviz.Graph:
    """The scenario's hosts and links as Graphviz sees them."""
    scenario = result.scenario
    topo = scenario.topology
    graph = graphviz.Graph(scenario.name, engine="dot",
                           graph_attr={"rankdir": "LR", "bgcolor": "white", "pad": "0.3",
                                       "nodesep": "0.6", "ranksep": "1.3"},
                           node_attr={"shape": "box", "style": "rounded,filled",
                                      "fillcolor": "#f4f4f4", "fontname": "DejaVu Sans",
                                      "fontsize": "11"},
                           edge_attr={"fontname": "DejaVu Sans", "fontsize": "10"})
    for name in topo.hosts:
        lines = [f"<b>{html.escape(name)}</b>"]
        lines += [html.escape(str(addr)) for (host, _), addr in topo.addresses.items()
                  if host == name]
        services = [svc.kind + (f" :{svc.port}" if svc.port else "")
                    for svc in scenario.services if svc.host == name]
        if scenario.proxy.kind != "none" and scenario.proxy.host == name:
            mode = f", {scenario.proxy.transparent}" if scenario.proxy.transparent else ""
            services.insert(0, f"proxy: {scenario.proxy.kind}{mode}")
        if scenario.proxy.client_host == name:
            services.insert(0, "FTP clients")
        lines += [f"<i>{html.escape(s)}</i>" for s in services]
        graph.node(name, label="<" + "<br/>".join(lines) + ">")
    for link in topo.links:
        state = result.links.get(link.name, "not captured")
        colour, _ = LINK_STYLES.get(state, LINK_STYLES["other"])
        dashed = state in ("silent", "not captured")
        graph.edge(link.hosts[0], link.hosts[1], label=f"{link.name}: {state}",
                   color=colour, fontcolor=colour, penwidth="1.5" if dashed else "3",
                   style="dashed" if dashed else "solid")
    # One arrow per pair of hosts, pointing the way the flows went, naming the links.
    pairs: dict[frozenset[str], tuple[set[tuple[str, str]], set[str]]] = {}
    for seen_on, source, destination in result.bypass:
        if source in topo.hosts and destination in topo.hosts:
            ways, links = pairs.setdefault(frozenset((source, destination)), (set(), set()))
            ways.add((source, destination))
            links.add(seen_on)
    for ways, links in pairs.values():
        source, destination = sorted(ways)[0]
        graph.edge(source, destination, label=f"bypass, seen on {', '.join(sorted(links))}",
                   color=BYPASS_COLOUR, fontcolor=BYPASS_COLOUR,
                   dir="both" if len(ways) == 2 else "forward", penwidth="2.5",
                   constraint="false")
    return graph


def render(results: Sequence[Result], pictures: dict[str, str], base: Path) -> str:
    """The page: a summary, then per scenario its picture (inline SVG, `pictures` by
    scenario name), verdicts, steps and links. Links are relative to `base`, where the
    page is written."""
    passed = sum(r.passed for r in results)
    rows = "".join(
        f'<tr><td><a href="#{_anchor(r)}">{html.escape(r.scenario.name)}</a></td>'
        f"<td>{_mark(r.passed)}</td><td>{r.seconds:.1f} s</td>"
        f"<td>{html.escape(r.scenario.description)}</td></tr>" for r in results)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>ftp-ssh-tunnel scenario report</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>ftp-ssh-tunnel scenario report</h1>",
        f"<p>{passed} of {len(results)} scenarios passed.</p>",
        "<table><tr><th>scenario</th><th>result</th><th>time</th><th>what it proves</th></tr>",
        rows, "</table>", _legend(),
    ]
    parts += [_section(r, pictures.get(r.scenario.name, ""), base) for r in results]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write(results: Sequence[Result], folder: Path) -> Path:
    """report.html in `folder`, with each picture also as NAME.svg beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    pictures = {}
    for result in results:
        svg = topology_graph(result).pipe(format="svg", encoding="utf-8")
        (folder / f"{result.scenario.name}.svg").write_text(svg)
        pictures[result.scenario.name] = svg[svg.index("<svg"):]  # inline: no XML prolog
    page = folder / "report.html"
    page.write_text(render(results, pictures, folder))
    return page


def _section(result: Result, svg: str, base: Path) -> str:
    name = html.escape(result.scenario.name)
    out = [f'<h2 id="{_anchor(result)}">{name}: {_mark(result.passed)}</h2>',
           f"<p>{html.escape(result.scenario.description)}</p>",
           f'<figure>{svg}<figcaption>Topology of {name}: links coloured by their '
           f"captures; red arrows are client&harr;FTP host flows (a bypass).</figcaption>"
           "</figure>"]
    if result.error:
        out.append(f'<p class="fail">error: {html.escape(result.error)}</p>')
    steps = [o for o in result.outcomes if o.name.startswith("step")]
    checks = [o for o in result.outcomes if not o.name.startswith("step")]
    for title, outcomes in (("Steps", steps), ("Verdicts", checks)):
        if not outcomes:
            continue
        out.append(f"<h3>{title}</h3><table><tr><th>{title[:-1].lower()}</th><th>expected"
                   "</th><th>got</th><th></th><th>detail</th></tr>")
        for o in outcomes:
            got = "pass" if o.verdict.passed else "fail"
            out.append(f"<tr><td>{html.escape(o.name)}</td><td>{html.escape(o.expected)}</td>"
                       f"<td>{got}</td><td>{_mark(o.ok)}</td>"
                       f"<td>{html.escape(o.verdict.detail)}</td></tr>")
        out.append("</table>")
    out.append(_links(result, base))
    return "\n".join(out)


def _links(result: Result, base: Path) -> str:
    if result.out_dir is None or not result.out_dir.is_dir():
        return "<p>No files kept (the run passed without --keep).</p>"
    files = sorted(p for p in result.out_dir.rglob("*") if p.is_file()
                   and p.suffix in (".pcap", ".log", ".jsonl", ".transcript", ".nft", ".toml"))
    items = "".join(f'<li><a href="{html.escape(os.path.relpath(p, base))}">'
                    f"{html.escape(str(p.relative_to(result.out_dir)))}</a></li>"
                    for p in files)
    return f"<h3>Captures and logs</h3><ul>{items}</ul>"


def _legend() -> str:
    spans = "".join(f'<span><span class="swatch" style="background:{colour}"></span>'
                    f"{html.escape(text)}</span>"
                    for state, (colour, text) in LINK_STYLES.items() if state != "silent")
    spans += (f'<span><span class="swatch" style="background:{BYPASS_COLOUR}"></span>'
              "client&rarr;FTP host flow (bypass)</span>")
    return f'<p class="legend">{spans}</p>'


def _mark(ok: bool) -> str:
    return '<span class="pass">PASS</span>' if ok else '<span class="fail">FAIL</span>'


def _anchor(result: Result) -> str:
    return "s-" + result.scenario.name


def browser() -> str | None:
    """A Chromium to look at the report with, or None."""
    import shutil
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 1400) -> None:
    """The page as headless Chromium draws it (the README's pictures; the report test)."""
    import subprocess
    exe = browser()
    if exe is None:
        raise RuntimeError("no chromium to take the screenshot with (Debian: chromium)")
    # --no-sandbox: Chromium's sandbox refuses to run as root, as CI does.
    done = subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", f"--window-size={width},{height}",
                           f"--screenshot={png}", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-500:]}")
