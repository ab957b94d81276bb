"""`tunnel import-tectia`: Tectia SOCKS Proxy's ssh-socks-proxy-config.xml -> our TOML.

Carried over: default-settings authentication methods; profiles (id, host, port, user,
gateway-profile); static tunnels of type socks-proxy (listen-address, listen-port,
allow-relay); filter-engine rules (ip-address regex, ports, action ftp-tunnel / ftp-sftp /
direct / block, profile-id, username-from-app, hostname-from-app, fallback-to-plain).
Anything else becomes a comment in the output saying what was left and why. The result is
validated by our own config parser before it is returned, so it loads as written.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from tunnel.config import parse as parse_config
from tunnel.errors import ConfigError

AUTH_MAP = {"auth-password": "password", "auth-keyboard-interactive": "password",
            "auth-publickey": "publickey"}
ACTION_MAP = {"ftp-tunnel": "ftp-tunnel", "ftp-sftp": "ftp-sftp", "direct": "direct",
              "block": "reject"}


@dataclass
class _Profile:
    id: str
    host: str
    port: str
    user: str
    gateway: str
    notes: list[str] = field(default_factory=list)


def _yes(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true", "1")


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def convert(xml_text: str, source: str = "ssh-socks-proxy-config.xml") -> str:
    """The TOML for a Tectia SOCKS Proxy config. Raises ValueError (bad XML) or ConfigError
    (the result would not load, which means a bug here)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ValueError(f"{source}: not well-formed XML: {exc}") from None
    out = [f"# Imported from {source} by `tunnel import-tectia`.",
           "# Review every comment marked NOT CARRIED before use.", ""]
    auth, auth_notes = _auth(root)
    out += _proxy(root)
    profiles = _profiles(root)
    rules_out, extra_profiles = _rules(root, profiles)
    by_id = {p.id: p for p in profiles}
    for profile in [*profiles, *extra_profiles]:
        out += ["[[profile]]"] + [f"# {note}" for note in profile.notes]
        out += [f"id = {_q(profile.id)}",
                f"host = {_q(profile.host)}" + ("   # \"\" = the SOCKS destination host"
                                               if not profile.host else ""),
                f"port = {profile.port or '22'}",
                f"user = {_q(profile.user)}" + ("   # \"\" = the user the FTP client sends"
                                               if not profile.user else ""),
                f"auth = [{', '.join(_q(a) for a in auth)}]"]
        out += [f"# {note}" for note in auth_notes]
        out += ['known_hosts = "~/.ssh/known_hosts"',
                'host_key_policy = "strict"   # NOT CARRIED: Tectia host key settings; '
                "put the servers' keys in known_hosts"]
        if profile.gateway:
            if profile.gateway in by_id:
                out.append(f"gateway = {_q(profile.gateway)}")
            else:
                out.append(f"# NOT CARRIED: gateway-profile {_q(profile.gateway)} names no "
                           "profile id in the file")
        out.append("")
    out += rules_out
    text = "\n".join(out) + "\n"
    try:
        parse_config(text, f"{source} (imported)")
    except ConfigError as exc:
        raise ConfigError(source, exc.key, f"the imported config does not load: {exc.reason}"
                          ) from None
    return text


def _auth(root: ET.Element) -> tuple[list[str], list[str]]:
    methods = root.find("default-settings/authentication-methods")
    found: list[str] = []
    notes: list[str] = []
    for element in list(methods) if methods is not None else []:
        mapped = AUTH_MAP.get(element.tag)
        if mapped is None:
            notes.append(f"NOT CARRIED: authentication method <{element.tag}>")
        elif mapped not in found:
            found.append(mapped)
        if element.tag == "auth-keyboard-interactive":
            notes.append("keyboard-interactive: answered with the password, as Tectia does")
    return (found or ["password", "publickey"]), notes


def _proxy(root: ET.Element) -> list[str]:
    listens, relay, notes = [], False, []
    for tunnel in root.iter("tunnel"):
        kind = tunnel.get("type", "")
        if kind != "socks-proxy":
            notes.append(f"# NOT CARRIED: static tunnel of type {kind!r} (only socks-proxy "
                         "tunnels have a meaning here)")
            continue
        address = tunnel.get("listen-address", "127.0.0.1") or "127.0.0.1"
        listens.append(f"[{address}]:{tunnel.get('listen-port', '1080')}" if ":" in address
                       else f"{address}:{tunnel.get('listen-port', '1080')}")
        relay = relay or _yes(tunnel.get("allow-relay"))
    out = ["[proxy]", *notes,
           f"listen = [{', '.join(_q(x) for x in listens or ['127.0.0.1:1080'])}]",
           f"allow_relay = {'true' if relay else 'false'}",
           'unmatched = "reject"   # our default: a request no rule matches is refused', ""]
    return out


def _profiles(root: ET.Element) -> list[_Profile]:
    profiles = []
    for index, element in enumerate(root.iter("profile"), start=1):
        profile = _Profile(element.get("id") or f"profile{index}", element.get("host", ""),
                           element.get("port", "22"), element.get("user", ""),
                           element.get("gateway-profile", ""))
        if element.get("name"):
            profile.notes.append(f"Tectia name: {element.get('name')}")
        if _yes(element.get("connect-on-startup")):
            profile.notes.append("NOT CARRIED: connect-on-startup (connections open on demand)")
        profiles.append(profile)
    return profiles


def _rules(root: ET.Element, profiles: list[_Profile]) -> tuple[list[str], list[_Profile]]:
    by_id = {p.id: p for p in profiles}
    out: list[str] = []
    extra: list[_Profile] = []
    for index, rule in enumerate(root.iter("rule"), start=1):
        regex = rule.get("ip-address", ".*") or ".*"
        action = ACTION_MAP.get(rule.get("action", "ftp-tunnel"))
        lines = ["[[rule]]", f'id = "tectia-rule-{index}"',
                 f"dst = {_q('*' if regex == '.*' else 're:' + regex)}",
                 f"ports = {_q(rule.get('ports', '*') or '*')}"]
        if action is None:
            out += [f"# NOT CARRIED: rule {index} with action {rule.get('action')!r}", ""]
            continue
        lines.append(f"action = {_q(action)}")
        profile_id = rule.get("profile-id", "")
        if action in ("ftp-tunnel", "ftp-sftp"):
            if profile_id not in by_id:
                out += [f"# NOT CARRIED: rule {index}: profile-id {profile_id!r} names no "
                        "profile", ""]
                continue
            profile = by_id[profile_id]
            # Tectia sets user/host-from-app per rule; ours is the profile's. A rule that
            # asks for it on a profile that fixes them gets its own copy of the profile.
            want_user = _yes(rule.get("username-from-app")) and profile.user
            want_host = _yes(rule.get("hostname-from-app")) and profile.host
            if want_user or want_host:
                derived = _Profile(f"{profile.id}-from-app-{index}",
                                   "" if want_host else profile.host, profile.port,
                                   "" if want_user else profile.user, profile.gateway,
                                   [f"copy of {profile.id!r} for tectia-rule-{index}: "
                                    "username/hostname-from-app"])
                extra.append(derived)
                profile_id = derived.id
            lines.append(f"profile = {_q(profile_id)}")
        fallback = _yes(rule.get("fallback-to-plain"))
        lines.append(f"fallback_to_plain = {'true' if fallback else 'false'}")
        out += [*lines, ""]
    for element in root.iter("dns"):
        out.append(f"# NOT CARRIED: <dns id={element.get('id')!r}>: names are matched by "
                   "rules here (dst globs and re:), and resolved by the SSH server")
    return out, extra
