"""Per-link captures and the verdicts drawn from them.

tcpdump runs inside one end's namespace on the link's veth and writes a pcap; it is stopped
with SIGINT and its own counters must show zero packets dropped by the kernel. scapy then
reassembles every TCP stream per direction (by sequence number, so retransmissions and
reordering do not hide or invent a needle) and the verdicts search them.

Every verdict has a positive control: a capture that saw no packet fails, `encrypted` must
see the SSH banner, `cleartext` must see every needle, `tls` must see a TLS handshake on an
FTP control connection.
"""

from __future__ import annotations

import ipaddress
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed import tlswire
from testbed.backends.base import LinkBackend

SSH_BANNER = b"SSH-2.0-"
FlowKey = tuple[str, int, str, int]


@dataclass
class Verdict:
    check: str
    subject: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.check}({self.subject}): {self.detail}"


@dataclass
class Capture:
    link: str
    pcap: Path
    packets: int = 0
    dropped: int | None = None
    _streams: dict[FlowKey, bytes] | None = field(default=None, repr=False)

    def streams(self) -> dict[FlowKey, bytes]:
        if self._streams is None:
            self._streams = reassemble(self.pcap)
        return self._streams

    def flows(self) -> set[tuple[str, str]]:
        return {(key[0], key[2]) for key in self.streams()}


class LinkCapture:
    """tcpdump on one link for the life of a scenario's steps."""

    def __init__(self, backend: LinkBackend, link: str, out_dir: Path) -> None:
        self.backend = backend
        self.link = link
        host = backend.topology.link(link).hosts[0]
        self.host = host
        self.iface = backend.iface(host, link)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.pcap = out_dir / f"{link}.pcap"
        self.log = out_dir / f"{link}.tcpdump.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> None:
        # --immediate-mode: without it a quiet link's packets wait in a ring block that
        # SIGINT discards ("0 captured, 17 received by filter", seen here). It costs
        # per-packet wakeups, so the kernel buffer is 64 MiB (-B, KiB): with the default 2 MiB,
        # 50 concurrent sessions made the kernel drop 395 packets (seen here).
        argv = [*self.backend.exec_prefix(self.host), "tcpdump", "-i", self.iface, "-n", "-s",
                "0", "-U", "--immediate-mode", "-B", "65536", "-w", str(self.pcap), "tcp"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while b"listening on" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump on {self.link} did not start: "
                                   f"{self.log.read_text(errors='replace')}")
            time.sleep(0.02)

    def stop(self) -> Capture:
        assert self.proc is not None
        time.sleep(0.2)  # let the last segments of a closing flow reach the ring buffer
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(15)
        text = self.log.read_text(errors="replace")
        captured = re.search(r"(\d+) packets? captured", text)
        dropped = re.search(r"(\d+) packets? dropped by kernel", text)
        return Capture(self.link, self.pcap, int(captured.group(1)) if captured else 0,
                       int(dropped.group(1)) if dropped else None)


def reassemble(pcap: Path) -> dict[FlowKey, bytes]:
    """Each TCP direction's payload in sequence order (relative to its first sequence
    number, modulo 2^32, so a wrap of the 32-bit space does not scramble it)."""
    from scapy.layers.inet import IP, TCP  # scapy is slow to import; only when judging
    from scapy.layers.inet6 import IPv6
    from scapy.utils import PcapReader

    segments: dict[FlowKey, dict[int, bytes]] = {}
    base: dict[FlowKey, int] = {}
    with PcapReader(str(pcap)) as reader:
        for packet in reader:
            if TCP not in packet:
                continue
            if IP in packet:
                ip = packet[IP]
            elif IPv6 in packet:  # an IPv6 flow must not be invisible to a verdict
                ip = packet[IPv6]
            else:
                continue
            tcp = packet[TCP]
            key = (str(ip.src), int(tcp.sport), str(ip.dst), int(tcp.dport))
            seq = int(tcp.seq)
            if key not in base:
                base[key] = seq + 1 if tcp.flags & 0x02 else seq  # SYN takes one number
            payload = bytes(tcp.payload)
            if payload:
                rel = (seq - base[key]) % (1 << 32)
                chunk = segments.setdefault(key, {})
                if len(payload) > len(chunk.get(rel, b"")):
                    chunk[rel] = payload
            else:
                segments.setdefault(key, {})
    streams: dict[FlowKey, bytes] = {}
    for key, chunks in segments.items():
        data = bytearray()
        for rel in sorted(chunks):
            payload = chunks[rel]
            if rel + len(payload) <= len(data):
                continue  # a retransmission of bytes we have
            data += payload[max(0, len(data) - rel):] if rel <= len(data) else payload
        streams[key] = bytes(data)
    return streams


def _no_packets(check: str, capture: Capture) -> Verdict | None:
    if capture.packets == 0:
        return Verdict(check, capture.link, False, "the capture saw no packets (positive "
                       "control failed: nothing to judge)")
    if capture.dropped:
        return Verdict(check, capture.link, False, f"{capture.dropped} packets dropped by the "
                       "kernel: the capture is incomplete")
    return None


def _found(capture: Capture, needles: Iterable[bytes]) -> list[bytes]:
    streams = capture.streams().values()
    return [n for n in needles if any(n in s for s in streams)]


def encrypted(capture: Capture, needles: Sequence[bytes]) -> Verdict:
    """No needle in clear on this link, and the SSH banner seen (the positive control)."""
    early = _no_packets("encrypted", capture)
    if early:
        return early
    found = _found(capture, needles)
    banner = bool(_found(capture, [SSH_BANNER]))
    passed = banner and not found
    detail = (f"{capture.packets} packets, SSH banner {'seen' if banner else 'NOT seen'}, "
              f"{len(found)} of {len(needles)} needles in clear"
              + (f": {_show(found)}" if found else ""))
    return Verdict("encrypted", capture.link, passed, detail)


def cleartext(capture: Capture, needles: Sequence[bytes]) -> Verdict:
    """Every needle appears in clear on this link."""
    early = _no_packets("cleartext", capture)
    if early:
        return early
    found = _found(capture, needles)
    missing = [n for n in needles if n not in found]
    return Verdict("cleartext", capture.link, not missing,
                   f"{capture.packets} packets, {len(found)} of {len(needles)} needles in clear"
                   + (f"; missing {_show(missing)}" if missing else ""))


def no_bypass(captures: Sequence[Capture], client: Sequence[str],
              ftp: Sequence[str]) -> Verdict:
    """No TCP flow between the client host's and the FTP host's addresses on any link:
    everything must go through the SSH server."""
    subject = ",".join(c.link for c in captures)
    # Positive control: something was captured. A link that stayed silent (the SSH server
    # refused, so nothing went on to the FTP host) is named, not failed.
    if not any(c.packets for c in captures):
        return Verdict("no_bypass", subject, False, "no capture saw a packet (positive "
                       "control failed: nothing to judge)")
    dropped = [c.link for c in captures if c.dropped]
    if dropped:
        return Verdict("no_bypass", subject, False, f"kernel dropped packets on {dropped}")
    silent = [c.link for c in captures if not c.packets]
    bypass = sorted({(src, dst) for capture in captures for src, dst in capture.flows()
                     if {src, dst} & set(client) and {src, dst} & set(ftp)})
    detail = (f"{len(bypass)} client<->FTP flows: " + ", ".join(f"{s}->{d}" for s, d in bypass)
              if bypass else "no flow between client and FTP host")
    if silent:
        detail += f" (no traffic at all on {', '.join(silent)})"
    return Verdict("no_bypass", subject, not bypass, detail)


def link_state(capture: Capture, needles: Sequence[bytes]) -> str:
    """What a link's capture showed, for the report's picture: "clear" (a needle in
    clear), "encrypted" (the SSH banner and no needle), "tls" (no SSH, no needle, and an
    FTP connection that turned to TLS), "silent" (no packet), or "other" (traffic, but
    none of those)."""
    if not capture.packets:
        return "silent"
    if _found(capture, needles):
        return "clear"
    if _found(capture, [SSH_BANNER]):
        return "encrypted"
    return "tls" if any(_starts_tls(data) for data in capture.streams().values()) else "other"


def _starts_tls(data: bytes) -> bool:
    """The stream's bytes from a `234` reply or an AUTH line on, or from the start, are TLS
    handshake records: a cheap look for the report, not a verdict."""
    for start in (0, *(m.end() for m in tlswire.AUTH_LINE.finditer(data)),
                  *(m.end() for m in tlswire.REPLY_234.finditer(data))):
        if data[start:start + 1] == bytes([tlswire.HANDSHAKE]) and \
                data[start + 1:start + 2] == b"\x03":
            return True
    return False


def bypass_flows(captures: Sequence[Capture], client: Sequence[str],
                 ftp: Sequence[str]) -> list[tuple[str, str, str]]:
    """(link, source, destination) of each TCP flow between the client's and the FTP
    host's addresses: what `no_bypass` counts, with where it was seen."""
    return sorted({(c.link, src, dst) for c in captures for src, dst in c.flows()
                   if {src, dst} & set(client) and {src, dst} & set(ftp)})


def only_port(capture: Capture, port: int, check: str = "only_ssh") -> Verdict:
    """Every TCP flow on this link has `port` at one end: the link carries SSH and nothing
    else (the ftp-sftp promise: the FTP client host talks only SSH on the wire)."""
    early = _no_packets(check, capture)
    if early:
        return early
    flows = capture.streams()
    other = sorted({f"{k[0]}:{k[1]}->{k[2]}:{k[3]}" for k in flows if port not in (k[1], k[3])})
    detail = (f"{len(flows)} flows, all to or from port {port}" if not other else
              f"{len(other)} of {len(flows)} flows not on port {port}: {', '.join(other[:4])}")
    return Verdict(check, capture.link, bool(flows) and not other, detail)


def _show(needles: Iterable[bytes]) -> str:
    return ", ".join(repr(n[:24]) for n in needles)


# --- the `tls` verdict ----------------------------------------------------------------------

@dataclass
class _Connection:
    """One TCP connection with the TLS server at one end: bytes each way."""

    name: str  # "10.77.2.1:40112->10.77.2.2:21", client side first
    server_port: int
    to_server: bytes
    to_client: bytes


def _connections(capture: Capture, server: Sequence[str], skip_ports: Iterable[int]
                 ) -> list[_Connection]:
    """Every connection with one of the server's addresses at one end, but not on a port of
    another service of that host (sshd on the FTP host is not FTP)."""
    streams, skip, seen = capture.streams(), set(skip_ports), set()
    found = []
    for src, sport, dst, dport in sorted(streams):
        if dst in server:
            peer, pport, addr, port = src, sport, dst, dport
        elif src in server:
            peer, pport, addr, port = dst, dport, src, sport
        else:
            continue
        key = (peer, pport, addr, port)
        if key in seen or port in skip:
            continue
        seen.add(key)
        # Whoever opened it (active mode: the server), the TLS client is the FTP client.
        found.append(_Connection(f"{peer}:{pport}<->{addr}:{port}", port,
                                 streams.get((peer, pport, addr, port), b""),
                                 streams.get((addr, port, peer, pport), b"")))
    return found


def _control_handshake(conn: _Connection) -> tlswire.Handshake:
    """An explicit FTPS control connection's handshake; NotTls if any of it is clear FTP."""
    _, client_tls, _, server_tls = tlswire.explicit_split(conn.to_server, conn.to_client)
    seen = tlswire.handshake(client_tls, server_tls)
    if seen.client is None or seen.server is None:
        missing = "ClientHello" if seen.client is None else "ServerHello"
        raise tlswire.NotTls(f"no {missing} after AUTH TLS")
    return seen


def _names_server(seen: tlswire.Handshake, name: str, addresses: Sequence[str]
                  ) -> tuple[str, str]:
    """(d) on one control connection: (how, what was seen). `how` is "certificate" or
    "sni" (the connection names the server), "wrong" (it names another), or "hidden" (it
    names none). The certificate decides where it is in clear (TLS <= 1.2); where it is not
    (TLS 1.3, or a resumed TLS 1.2 session) the ClientHello's SNI does. A client that
    reaches the server by address sends no SNI (RFC 6066 §3 forbids IP literals; a few
    send one all the same, which is as good as none), so in TLS 1.3 such a connection shows
    nothing of the server's identity: not wrong, but no proof either."""
    wanted = {name, f"{name}-v6"}
    if seen.certificates:
        cns, sans = tlswire.certificate_names(seen.certificates[0])
        said = f"certificate CN {', '.join(cns) or 'none'}, SAN {', '.join(sans) or 'none'}"
        if wanted & {*cns, *sans}:
            return "certificate", said
        return "wrong", f"{said}: does not name {name!r}"
    version = seen.server.version_name if seen.server else "?"
    sni = seen.client.server_name if seen.client else None
    said = f"certificate not visible ({version}), SNI {sni!r}"
    if sni in wanted:
        return "sni", said
    if sni is None or _is_address(sni, addresses):
        return "hidden", ("by address (identity not visible in TLS 1.3)" if seen.tls13 else
                          f"by address (no certificate in a resumed {version} session)")
    return "wrong", f"{said}: want {name!r}"


def _is_address(text: str, addresses: Sequence[str]) -> bool:
    """`text` is an IP literal, one of `addresses` (an SNI some clients send by address)."""
    def parse(a: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(a)
        except ValueError:
            return None
    return parse(text) is not None and parse(text) in {parse(a) for a in addresses}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _naming(judged: list[tuple[str, str, str]], name: str) -> tuple[str, list[str]]:
    """(d) over every control connection whose handshake was read, as (connection, how,
    what was seen): (the detail's part, failures). Pass needs one connection showing
    `name` and none naming another server."""
    shown: dict[str, str] = {}
    for _, how, said in judged:
        shown.setdefault(how, said)
    counts = Counter(how for _, how, _ in judged)
    hidden = Counter(said for _, how, said in judged if how == "hidden")
    by = [f"by {label} on {counts[how]}" for how, label in
          (("certificate", "certificate"), ("sni", "SNI")) if counts[how]]
    text = ((f"named {' and '.join(by)}" if by else "named on 0")
            + f" of {_plural(len(judged), 'control connection')}")
    text += "".join(f", {n} {reason}" for reason, n in hidden.items())
    if counts["wrong"]:
        text += f", {counts['wrong']} naming another server"
    seen = "; ".join(shown[how] for how in ("certificate", "sni") if how in shown)
    failures = [] if by else [f"no control connection shows {name!r} (certificate or "
                              "SNI): nothing proves the server"]
    failures += [f"control {conn}: {said}" for conn, how, said in judged if how == "wrong"]
    return (f"{seen}: {text}" if seen else text), failures


def tls(capture: Capture, needles: Sequence[bytes], server: Sequence[str], port: int,
        name: str, skip_ports: Iterable[int] = ()) -> Verdict:
    """The link carries FTP to `server` (its addresses; `port` its control port) only as
    TLS: (a) a TLS handshake on every control connection after AUTH TLS, (b) every other
    connection with the server (data, either way) TLS records from its first byte, none
    clear, (c) no needle in clear, (d) on every control connection, the certificate (TLS
    <= 1.2), or in TLS 1.3, where it is encrypted, the ClientHello's SNI, names `name` or
    nothing (a connection by address in TLS 1.3), never another server, and on at least
    one it names `name`."""
    early = _no_packets("tls", capture)
    if early:
        return early
    connections = _connections(capture, server, skip_ports)
    controls = [c for c in connections if c.server_port == port]
    if not controls:
        return Verdict("tls", capture.link, False, f"no FTP control connection to port {port} "
                       f"of {', '.join(server)} (positive control failed: nothing to judge)")
    failures: list[str] = []
    shown: list[str] = []
    versions: Counter[str] = Counter()
    judged: list[tuple[str, str, str]] = []
    for conn in controls:
        try:
            seen = _control_handshake(conn)
        except tlswire.NotTls as exc:
            failures.append(f"control {conn.name}: {exc}")
            continue
        versions[seen.server.version_name if seen.server else "?"] += 1
        judged.append((conn.name, *_names_server(seen, name, server)))
    resumed = clear_free = 0
    data = [c for c in connections if c.server_port != port]
    for conn in data:
        if not conn.to_server and not conn.to_client:
            continue  # opened and closed with nothing said: nothing leaked
        try:
            seen = tlswire.handshake(conn.to_server, conn.to_client)
        except tlswire.NotTls as exc:
            failures.append(f"data {conn.name}: clear, {exc}")
            continue
        clear_free += 1
        resumed += seen.resumed
    found = _found(capture, needles)
    if found:
        failures.append(f"{len(found)} of {len(needles)} needles in clear: {_show(found)}")
    if judged:
        said, wrong = _naming(judged, name)
        failures.extend(wrong)
        shown.append(", ".join(f"{version} on {n}" for version, n in sorted(versions.items()))
                     + f" of {_plural(len(controls), 'control connection')}; {said}")
    shown.append(f"{clear_free} of {len(data)} data connections TLS ({resumed} resumed)")
    detail = "; ".join(shown) + (f"; FAIL: {'; '.join(failures[:4])}" if failures else
                                 f"; 0 of {len(needles)} needles in clear")
    return Verdict("tls", capture.link, not failures, detail)
