"""Real FTP clients, run inside the client host, through the SOCKS proxy when there is one:
curl, lftp (under proxychains4), Python ftplib (over python-socks) and tnftp (under Dante's
socksify). Each runs the scenario's operations and returns its transcript; the runner judges
by evidence (files on both sides, listings), not by exit codes alone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from testbed.backends.base import Backend

SOCKS = ("127.0.0.1", 1080)
REMOTE_NAME = "payload.bin"

# Combinations that cannot work, with the reason; the runner reports them, never fakes them.
NOT_APPLICABLE = {
    ("ftplib", "epsv"): "ftplib sends EPSV only on IPv6 control connections",
    ("ncftp", "epsv"): "ncftp has no switch to send EPSV rather than PASV",
}


@dataclass
class Job:
    backend: Backend
    host: str  # where the client runs
    proxied: bool
    user: str
    password: str
    server: str  # FTP host name, resolved by the client host (or by the proxy)
    port: int
    directory: str
    payload: Path
    download: Path
    active_address: str
    workdir: Path
    remote_name: str = REMOTE_NAME
    ftps: bool = False  # ask for TLS first (curl --ssl: go on in plain if refused)
    limit_rate: str = ""  # curl --limit-rate; ftplib paces itself to the same figure
    socks: tuple[str, int] = SOCKS  # the proxy, as the client host dials it
    idle: float = 10.0  # seconds the `wait` operation sits idle (ftplib)
    deadline: float = 60.0  # curl's --max-time; every client command is killed at twice it
    # Parallel steps: the session's first command runs behind this prefix, which holds it
    # at the runner's starting line (testbed/clients/gate.py) until every client is spawned.
    gate: list[str] | None = None
    cacert: str = ""  # with ftps: the CA curl trusts (the run CA, where a service has TLS)

    @property
    def remote(self) -> str:
        return f"{self.directory}/{self.remote_name}"


def not_applicable(client: str, mode: str, proxied: bool) -> str | None:
    reason = NOT_APPLICABLE.get((client, mode))
    if reason and client == "tnftp" and not proxied:
        return None  # without SOCKS there is no BIND to need
    return reason


def run(client: str, job: Job, mode: str, ops: tuple[str, ...]) -> str:
    """Run the operations; returns the transcript (stdout + stderr)."""
    return {"curl": _curl, "lftp": _lftp, "ftplib": _ftplib, "tnftp": _tnftp,
            "ncftp": _ncftp}[client](job, mode, ops)


def _exec(job: Job, argv: list[str], stdin: str | None = None,
          env: dict[str, str] | None = None) -> str:
    prefix = ["env", *[f"{k}={v}" for k, v in (env or {}).items()]] if env else []
    if job.gate is not None:
        prefix = [*job.gate, *prefix]
        job.gate = None  # only the first command waits: the session is under way
    got = job.backend.run(job.host, [*prefix, *argv], timeout=2 * job.deadline, input=stdin)
    # The command line, not its secrets: a client without a wrapper (lftp -c SCRIPT) has
    # the password within the first words.
    shown = " ".join(argv[:3]).replace(job.password, "***") if job.password else " ".join(
        argv[:3])
    return f"$ {shown} ... -> exit {got.returncode}\n{got.stdout}{got.stderr}"


def _curl(job: Job, mode: str, ops: tuple[str, ...]) -> str:
    base = f"ftp://{job.user}:{job.password}@{job.server}:{job.port}/{job.directory}/"
    flags = ["-sS", "--max-time", f"{job.deadline:g}"]
    if job.proxied:
        flags += ["--socks5-hostname", f"{job.socks[0]}:{job.socks[1]}"]
    if mode == "pasv":
        flags.append("--disable-epsv")
    elif mode == "active":
        flags += ["-P", job.active_address]
    if job.ftps:
        flags.append("--ssl")
        if job.cacert:
            flags += ["--cacert", job.cacert]
    if job.limit_rate:
        flags += ["--limit-rate", job.limit_rate]
    commands = {
        "upload": ["--ftp-create-dirs", "-T", str(job.payload), base + job.remote_name],
        "download": ["-o", str(job.download), base + job.remote_name],
        "list": ["--list-only", base],
    }
    return "".join(_exec(job, ["curl", *flags, *commands[op]]) for op in ops)


def _lftp(job: Job, mode: str, ops: tuple[str, ...]) -> str:
    settings = ["set ftp:ssl-allow no", "set net:max-retries 1", "set net:timeout 20",
                f"set ftp:passive-mode {'off' if mode == 'active' else 'on'}",
                f"set ftp:prefer-epsv {'yes' if mode == 'epsv' else 'no'}"]
    # Active mode: lftp listens on its control socket's local address and says so in PORT;
    # under proxychains that is 127.0.0.1, which the proxy connects to. Forcing
    # ftp:port-ipv4 would announce an address nobody listens on.
    commands = {
        "upload": [f"mkdir -p -f {job.directory}", f"put {job.payload} -o {job.remote}"],
        "download": [f"get {job.remote} -o {job.download}"],
        "list": [f"cls -1 {job.directory}/"],
    }
    script = "; ".join([*settings, f"open -u {job.user},{job.password} "
                        f"ftp://{job.server}:{job.port}",
                        *[c for op in ops for c in commands[op]], "bye"])
    argv = ["lftp", "-c", script]
    if job.proxied:
        conf = job.workdir / "proxychains.conf"
        conf.write_text(f"strict_chain\nproxy_dns\ntcp_read_time_out 15000\n"
                        f"tcp_connect_time_out 8000\n[ProxyList]\n"
                        f"socks5 {job.socks[0]} {job.socks[1]}\n")
        argv = ["proxychains4", "-q", "-f", str(conf), *argv]
    return _exec(job, argv)


# How the ftplib script's `upload-reset` op begins the line with the reply to its cut upload
# (the runner reads it; the script spells it out, a unit test keeps the two the same).
RESET_REPLY = "upload-reset reply:"

FTPLIB_SCRIPT = """
import ftplib, socket, struct, sys, time
sys.path.insert(0, sys.argv[1])
from testbed.clients.ftplib_socks import SocksFTP
(_, _, proxied, server, port, user, password, directory, payload, download, mode,
 ops, name, socks, idle, limit_rate) = sys.argv


def rate_of(text):
    # curl's --limit-rate form: bytes per second, "k", "m" or "g" for 1024 multiples.
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower()
    return float(text[:-1]) * units[text[-1]] if text[-1:] in units else float(text or 0)


class Pace:
    # Called with each block moved; sleeps to keep the average at `rate` bytes per second.
    def __init__(self, rate):
        self.rate, self.moved, self.start = rate, 0, time.monotonic()

    def __call__(self, block):
        self.moved += len(block)
        ahead = self.moved / self.rate - (time.monotonic() - self.start) if self.rate else 0
        if ahead > 0:
            time.sleep(ahead)


ftp = SocksFTP(f"socks5://{socks}") if proxied == "1" else ftplib.FTP(timeout=30)
ftp.connect(server, int(port))
ftp.login(user, password)
ftp.set_pasv(mode != "active")


def reset_and_reply(conn):
    # Close the data connection with SO_LINGER {on, 0}, so close() sends a TCP RST, not a
    # FIN (a FIN would be a whole, shorter file: RFC 959 stream mode); then the reply.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    try:
        return ftp.getresp()
    except ftplib.Error as exc:
        return str(exc)


def make_directory():
    try:
        ftp.mkd(directory)
    except ftplib.error_perm:
        pass  # it is there already


op = ""
try:
    for op in ops.split(","):
        pace = Pace(rate_of(limit_rate))
        if op == "upload":
            make_directory()
            with open(payload, "rb") as fh:
                print(ftp.storbinary(f"STOR {directory}/{name}", fh, callback=pace))
        elif op == "upload-reset":
            # A client that dies mid-upload: half the file, a second for it to reach the
            # server's disk, then a reset.
            make_directory()
            with open(payload, "rb") as fh:
                data = fh.read()
            ftp.voidcmd("TYPE I")  # storbinary's own first step: an image, not text
            conn = ftp.transfercmd(f"STOR {directory}/{name}")
            conn.sendall(data[: len(data) // 2])
            time.sleep(1.0)
            print("upload-reset reply:", reset_and_reply(conn), flush=True)
        elif op == "download-cut":
            # A client that wants only the start of a file (curl -r, a viewer): it reads
            # 1 MiB, then resets the data connection. The session must go on.
            ftp.voidcmd("TYPE I")
            conn = ftp.transfercmd(f"RETR {directory}/{name}")
            got = 0
            while got < (1 << 20):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
            print("download-cut reply:", reset_and_reply(conn), flush=True)
            print("download-cut then:", ftp.voidcmd("NOOP"), flush=True)
        elif op == "late-list":
            # PASV, then connect only `idle` seconds later: later than the proxy waits
            # (proxy.data_wait). What happens to a data connection nobody expects any more?
            host, port = ftplib.parse227(ftp.sendcmd("PASV"))
            time.sleep(float(idle))
            with socket.create_connection((host, port), timeout=10) as late:
                ftp.putcmd(f"NLST {directory}")
                print("late-list", "got", late.recv(4096))  # two words: not the source
        elif op == "wait":
            time.sleep(float(idle))  # an idle session: nothing on the control connection
        elif op == "download":
            with open(download, "wb") as fh:
                print(ftp.retrbinary(f"RETR {directory}/{name}",
                                     lambda block: (fh.write(block), pace(block))))
        else:
            print("\\n".join(ftp.nlst(directory)))
except OSError as exc:
    # The data connection failed, and ftplib stops there: read what the server answered
    # on the control connection (a 421 or 426 ftplib alone would leave unread), as a
    # careful client reports it, then the failure itself.
    try:
        ftp.sock.settimeout(5)
        reply = ftp.getresp()
    except (OSError, EOFError, AttributeError, ftplib.Error) as late:  # no socket: None
        reply = str(late) or type(late).__name__
    print("reply after the failure:", reply)
    print(f"{op}: {type(exc).__name__}: {exc}")  # last: the line a failed step quotes
    sys.exit(1)
print(ftp.quit())
"""


def _ftplib(job: Job, mode: str, ops: tuple[str, ...]) -> str:
    root = str(Path(__file__).resolve().parents[2])
    return _exec(job, [sys.executable, "-c", FTPLIB_SCRIPT, root, "1" if job.proxied else "0",
                       job.server, str(job.port), job.user, job.password, job.directory,
                       str(job.payload), str(job.download), mode, ",".join(ops),
                       job.remote_name, f"{job.socks[0]}:{job.socks[1]}", str(job.idle),
                       job.limit_rate])


def _tnftp(job: Job, mode: str, ops: tuple[str, ...]) -> str:
    commands = {
        "upload": [f"mkdir {job.directory}", f"put {job.payload} {job.remote}"],
        "download": [f"get {job.remote} {job.download}"],
        "list": [f"ls {job.directory}/"],
    }
    script = "\n".join([f"open {job.server} {job.port}", f"user {job.user} {job.password}",
                        "binary", f"passive {'off' if mode == 'active' else 'on'}",
                        f"epsv4 {'on' if mode == 'epsv' else 'off'}",
                        *[c for op in ops for c in commands[op]], "bye", ""])
    argv = ["tnftp", "-n", "-v"]
    env = None
    if job.proxied:
        conf = job.workdir / "socks.conf"
        # Names resolve locally (the host's /etc/hosts): with Dante's "fake" resolution the
        # app sees 0.0.0.1 as its peer, and tnftp then rejects any 227 address as a mismatch.
        conf.write_text("route {\n  from: 0.0.0.0/0 to: 0.0.0.0/0 "
                        f"via: {job.socks[0]} port = {job.socks[1]}\n  proxyprotocol: socks_v5\n"
                        "  method: none\n  protocol: tcp\n}\n")
        argv = ["socksify", *argv]
        env = {"SOCKS_CONF": str(conf)}
    return _exec(job, argv, stdin=script, env=env)


def _ncftp(job: Job, mode: str, ops: tuple[str, ...]) -> str:
    """ncftpget/ncftpput/ncftpls, without SOCKS (it has none: transparent scenarios). In
    active mode it accepts a data connection only from the server's own address."""
    if job.proxied:
        raise ValueError("ncftp has no SOCKS support: use it in transparent scenarios")
    common = ["-u", job.user, "-p", job.password, "-P", str(job.port), "-t", "30",
              "-E" if mode == "active" else "-F"]
    commands = {
        # -c: the file on standard output / input, so the names are ours to choose.
        "upload": f"ncftpput {_quoted(common)} -m -c {job.server} {job.remote} "
                  f"< {job.payload}",
        "download": f"ncftpget {_quoted(common)} -c {job.server} {job.remote} "
                    f"> {job.download}",
        "list": f"ncftpls {_quoted(common)} -1 ftp://{job.server}/{job.directory}/",
    }
    return "".join(_exec(job, ["sh", "-c", commands[op]]) for op in ops)


def _quoted(words: list[str]) -> str:
    import shlex
    return " ".join(shlex.quote(word) for word in words)
