"""The `tunnel` command: serve, check, explain, nft, ctl, import-tectia."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import socket
import sys

from tunnel import __version__
from tunnel import config as config_mod
from tunnel.config import Config, HostKeyPolicy
from tunnel.errors import ConfigError
from tunnel.rules import Action, IPAddress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunnel", description="SOCKS proxy that carries FTP "
                                     "(and any TCP) through SSH.")
    parser.add_argument("--version", action="version", version=f"tunnel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("-c", "--config", required=True)
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.add_argument("--check", action="store_true",
                       help="dry start: validate, bind every listener and the control socket, "
                            "then exit (0 if the daemon would start)")
    check = sub.add_parser("check", help="validate a config file")
    check.add_argument("-c", "--config", required=True)
    explain = sub.add_parser("explain", help="which rule, action and SSH server a destination gets")
    explain.add_argument("-c", "--config", required=True)
    explain.add_argument("destination", help="HOST:PORT")
    explain.add_argument("--no-resolve", action="store_true",
                         help="do not resolve a host name to match IP rules")
    nft = sub.add_parser("nft", help="print the nftables ruleset for the config's "
                         "transparent listeners (load it with: | nft -f -)")
    nft.add_argument("-c", "--config", required=True)
    nft.add_argument("--gateway", metavar="IFACE", default="",
                     help="capture connections routed in through IFACE (clients on other "
                          "hosts) instead of this host's own")
    nft.add_argument("--delete", action="store_true", help="print the removal instead")
    ctl = sub.add_parser("ctl", help="talk to a running daemon (proxy.control_socket)")
    ctl.add_argument("-c", "--config", required=True)
    ctl.add_argument("cmd", choices=["status", "list", "close", "reload"])
    ctl.add_argument("arg", nargs="?", help="the session id, for close")
    tectia = sub.add_parser("import-tectia", help="convert a Tectia ssh-socks-proxy-config.xml")
    tectia.add_argument("xml")
    tectia.add_argument("-o", "--output", help="write here instead of standard output")
    args = parser.parse_args(argv)

    if args.command == "import-tectia":
        return _import_tectia(args.xml, args.output)
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        print(f"tunnel: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        transparent = (f"; transparent on {', '.join(map(str, cfg.proxy.transparent))}"
                       if cfg.proxy.transparent else "")
        print(f"{args.config}: OK ({len(cfg.profiles)} profiles, {len(cfg.rules.rules)} rules, "
              f"listening on {', '.join(map(str, cfg.proxy.listen))}{transparent})")
        return 0
    if args.command == "explain":
        return _explain(cfg, args.destination, resolve=not args.no_resolve)
    if args.command == "nft":
        return _nft(cfg, args.gateway, args.delete)
    if args.command == "ctl":
        return _ctl(cfg, args.cmd, args.arg)
    return _serve(cfg, args.verbose, args.check)


def _serve(cfg: Config, verbose: bool, dry_run: bool = False) -> int:
    from tunnel.hardening import protect_process_memory
    from tunnel.server import ProxyServer  # asyncssh is only needed to serve

    if not dry_run:  # a dry start takes no password, and may run inside another process
        protect_process_memory()  # before the first password can arrive

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # asyncssh logs every channel at INFO; keep our log about sessions, not packets.
    logging.getLogger("asyncssh").setLevel(logging.DEBUG if verbose else logging.WARNING)

    async def run() -> None:
        server = ProxyServer(cfg)
        if dry_run:  # everything a start does that can fail, then a clean stop
            await server.start()
            await server.drain()
            print(f"{cfg.path}: the daemon would start (listeners bound, then released)")
            return
        await server.run()

    try:
        # uvloop was measured here (throughput and session start): no gain, so plain asyncio.
        asyncio.run(run())
    except OSError as exc:
        print(f"tunnel: cannot serve: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # what only the start can find (transparent: no privilege)
        print(f"tunnel: config error: {exc}", file=sys.stderr)
        return 2
    return 0


def _import_tectia(path: str, output: str | None) -> int:
    from tunnel.tectia import convert

    try:
        with open(path, encoding="utf-8") as fh:
            text = convert(fh.read(), path)
    except (OSError, ValueError, ConfigError) as exc:
        print(f"tunnel import-tectia: {exc}", file=sys.stderr)
        return 2
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(output, 0o644)  # not group-writable: `tunnel serve` would refuse it
        print(f"wrote {output}; check it with: tunnel check -c {output}")
    else:
        sys.stdout.write(text)
    return 0


def _ctl(cfg: Config, cmd: str, arg: str | None) -> int:
    path = cfg.proxy.control_socket
    if not path:
        print(f"tunnel ctl: {cfg.path} sets no proxy.control_socket", file=sys.stderr)
        return 2
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall((json.dumps({"cmd": cmd, "arg": arg}) + "\n").encode())
            answer = json.loads(sock.makefile().readline())
    except (OSError, ValueError) as exc:
        print(f"tunnel ctl: cannot talk to the daemon at {path}: {exc}", file=sys.stderr)
        return 1
    if cmd == "list" and answer.get("ok"):
        print(f"{'id':>5} {'client':21} {'local':10} {'user':12} {'dst':24} {'action':14} "
              f"{'ssh server':22} {'age s':>7} {'up':>10} {'down':>10}")
        for row in answer["sessions"]:
            print(f"{row['id']:>5} {row['client']:21} {row.get('local_user', '')[:10]:10} "
                  f"{row['user'][:12]:12} {row['dst'][:24]:24} "
                  f"{row['action'][:14]:14} {row['ssh_server'][:22]:22} {row['age_s']:>7} "
                  f"{row['bytes_up']:>10} {row['bytes_down']:>10}")
    else:
        print(json.dumps(answer, indent=2))
    return 0 if answer.get("ok") else 1


def _nft(cfg: Config, gateway: str, delete: bool) -> int:
    from tunnel import nft

    if delete:
        sys.stdout.write(nft.delete_script())
        return 0
    try:
        plan = nft.plan(cfg, gateway)
    except nft.NftConfigError as exc:
        print(f"tunnel nft: {cfg.path}: {exc}", file=sys.stderr)
        return 2
    for warning in plan.warnings:
        print(f"tunnel nft: warning: {warning}", file=sys.stderr)
    sys.stdout.write(nft.script(plan, cfg.path))
    return 0


def _split_destination(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _explain(cfg: Config, destination: str, resolve: bool) -> int:
    try:
        host, port = _split_destination(destination)
    except ValueError as exc:
        print(f"tunnel: {exc}", file=sys.stderr)
        return 2
    addresses: list[IPAddress] = []
    lines = [f"destination: {host}:{port}"]
    if cfg.rules.wants_resolution(host):
        if resolve:
            try:
                infos = socket.getaddrinfo(host, None)
                addresses = list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))
                lines.append(f"  a host name; IP rules are matched against its local "
                             f"resolution: {', '.join(map(str, addresses))}")
            except OSError as exc:
                lines.append(f"  a host name that does not resolve here ({exc.strerror}); "
                             "only name rules can match it")
        else:
            lines.append("  a host name; not resolved (--no-resolve): only name rules apply")
    decision = cfg.rules.decide(host, port, addresses)
    lines.append(f"rule: {decision.describe()}")
    rule = next((r for r in cfg.rules.rules if r.id == decision.rule_id), None)
    if rule is not None and rule.users is not None:
        lines.append(f"  for local users: {rule.users} (others go on to the next rule)")
    lines.append(f"action: {decision.action.value}")
    if decision.action is Action.FTP_TUNNEL:
        lines.append("  FTP-aware: control and every data channel (passive, EPSV, active) "
                     "ride the same SSH connection")
    if decision.action is Action.FTP_SFTP:
        lines.append("  (the proxy serves FTP itself and carries each command over SFTP)")
    if decision.profile is not None:
        profile = cfg.profile(decision.profile)
        ssh_host = profile.host or host
        chain = []
        hop = profile
        while hop.gateway:
            hop = cfg.profile(hop.gateway)
            chain.append(f"{hop.host}:{hop.port} (profile {hop.id!r})")
        lines.append(f"ssh server: {ssh_host}:{profile.port} (profile {profile.id!r}"
                     + (", the SOCKS destination itself" if not profile.host else "") + ")")
        if chain:
            lines.append(f"  via gateway {' then '.join(reversed(chain))}")
        app_source = ("the FTP client's USER/PASS" if decision.action is Action.FTP_TUNNEL
                      else "SOCKS5 username/password")
        lines.append("ssh user: " + (f"{profile.user!r} (from the profile)" if profile.user else
                                     f"from the application ({app_source})"))
        if profile.users is not None:
            lines.append(f"profile for local users: {profile.users}; others are refused")
        lines.append(f"auth: {', '.join(profile.auth)}; host keys: "
                     f"{profile.host_key_policy.value}"
                     + (f" ({profile.known_hosts})"
                        if profile.host_key_policy is not HostKeyPolicy.INSECURE else ""))
        if decision.last_hop.on:
            where = "inside the SSH server" if ssh_host == host else f"from {ssh_host}"
            lines.append(f"last hop: {where} to {host}:{port} in "
                         f"{decision.last_hop.describe()}")
        elif ssh_host == host:
            lines.append("last hop: inside the SSH server (it is the destination)")
        else:
            lines.append(f"last hop: CLEAR from {ssh_host} to {host}:{port}")
        if decision.fallback_to_plain:
            how = ("in FTPS as above, not through SSH" if decision.last_hop.on
                   else "unencrypted")
            lines.append(f"fallback: connects directly, {how}, if SSH fails")
    if cfg.proxy.transparent:
        from tunnel import nft
        for gateway in ("", "IFACE"):
            try:
                plan = nft.plan(cfg, gateway)
            except nft.NftConfigError:
                continue  # that mode is not set up in this config
            mode = "gateway" if gateway else "local"
            lines.append(f"{nft.captured_by(plan, host, port)} ({mode} mode)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
