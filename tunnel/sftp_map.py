"""What the `ftp-sftp` action needs to speak FTP in front of SFTP, pure: the one table from
SFTP status codes to FTP replies, path arithmetic, listing formats (LIST, NLST, MLSD/MLST,
MDTM) and TYPE A line-ending conversion. No sockets, no asyncssh: values in, values out.
"""

from __future__ import annotations

import calendar
import posixpath
import re
import stat
import time
from dataclasses import dataclass

# SFTP status codes (draft-ietf-secsh-filexfer-13 §9.1; OpenSSH speaks version 3, 0-8).
FX_NO_SUCH_FILE = 2
FX_PERMISSION_DENIED = 3
FX_FAILURE = 4
FX_BAD_MESSAGE = 5
FX_NO_CONNECTION = 6
FX_CONNECTION_LOST = 7
FX_OP_UNSUPPORTED = 8
FX_NO_SUCH_PATH = 10
FX_FILE_ALREADY_EXISTS = 11
FX_WRITE_PROTECT = 12
FX_NO_SPACE_ON_FILESYSTEM = 14
FX_QUOTA_EXCEEDED = 15
FX_DIR_NOT_EMPTY = 18
FX_NOT_A_DIRECTORY = 19
FX_INVALID_FILENAME = 20
FX_FILE_IS_A_DIRECTORY = 24

# Verbs that create a name: RFC 959 gives 553 ("file name not allowed") for their refusals.
NAMING_VERBS = frozenset({"STOR", "APPE", "STOU", "RNTO"})  # not MKD: 550 (RFC 959 §5.4)

# The one table: SFTP status -> (FTP code, what the FTP client is told). RFC 959 §4.2.
_STATUS_TO_FTP: dict[int, tuple[int, str]] = {
    FX_NO_SUCH_FILE: (550, "No such file or directory"),
    FX_NO_SUCH_PATH: (550, "No such file or directory"),
    FX_PERMISSION_DENIED: (550, "Permission denied"),
    FX_WRITE_PROTECT: (550, "Permission denied (write protected)"),
    # SFTP v3 (OpenSSH) says only "Failure" for an existing name, a non-empty directory...
    FX_FAILURE: (550, "the SFTP server refused without a reason (an existing name, a "
                      "directory not empty?)"),
    FX_FILE_ALREADY_EXISTS: (550, "File exists"),
    FX_DIR_NOT_EMPTY: (550, "Directory not empty"),
    FX_NOT_A_DIRECTORY: (550, "Not a directory"),
    FX_FILE_IS_A_DIRECTORY: (550, "Is a directory"),
    FX_INVALID_FILENAME: (553, "File name not allowed"),
    FX_NO_SPACE_ON_FILESYSTEM: (452, "Insufficient storage space"),
    FX_QUOTA_EXCEEDED: (552, "Exceeded storage allocation"),
    FX_OP_UNSUPPORTED: (502, "Not supported by the SFTP server"),
    FX_BAD_MESSAGE: (451, "Local error in processing (bad SFTP message)"),
    FX_NO_CONNECTION: (421, "SFTP connection lost; closing control connection"),
    FX_CONNECTION_LOST: (421, "SFTP connection lost; closing control connection"),
}


def ftp_reply_for(status: int, verb: str, mid_transfer: bool = False) -> tuple[int, str]:
    """The FTP reply for an SFTP failure of `verb`. A failure after data started flowing is
    451 (RFC 959: "local error in processing"), so no client takes a cut file as whole."""
    code, text = _STATUS_TO_FTP.get(status, (451, f"SFTP error {status}"))
    if code == 421:
        return code, text
    if mid_transfer:
        return 451, f"Transfer aborted: {text}"
    if code == 550 and verb in NAMING_VERBS and status in (FX_PERMISSION_DENIED,
                                                          FX_WRITE_PROTECT, FX_FAILURE):
        return 553, f"File name not allowed: {text}"
    return code, text


def resolve(cwd: str, arg: str) -> str:
    """An FTP path argument as an absolute SFTP path. `cwd` is absolute."""
    if not arg:
        return cwd
    return posixpath.normpath(posixpath.join(cwd, arg)).replace("//", "/")


def quote_path(path: str) -> str:
    """RFC 959 §7 (257 replies): the path in double quotes, inner quotes doubled."""
    return '"' + path.replace('"', '""') + '"'


def list_target(arg: str) -> str:
    """LIST/NLST arguments without ls options: `LIST -la` and `LIST -a dir` (lftp, curl)."""
    words = [w for w in arg.split(" ") if w]
    while words and words[0].startswith("-"):
        words.pop(0)
    return " ".join(words)


@dataclass(frozen=True)
class Entry:
    """One directory entry as SFTP reports it (attributes may be missing)."""

    name: str
    size: int | None = None
    permissions: int | None = None  # st_mode, file type bits included
    mtime: int | None = None
    uid: int | None = None
    gid: int | None = None
    nlink: int | None = None
    longname: str = ""  # OpenSSH sends an `ls -l` line in SFTP v3

    @property
    def is_dir(self) -> bool:
        return self.permissions is not None and stat.S_ISDIR(self.permissions)

    @property
    def is_link(self) -> bool:
        return self.permissions is not None and stat.S_ISLNK(self.permissions)


def _ls_time(mtime: int | None, now: float) -> str:
    """`ls -l` time: month day hh:mm within the last six months, else month day year."""
    t = time.gmtime(mtime or 0)
    recent = mtime is not None and now - 182 * 86400 < mtime <= now + 3600
    return time.strftime("%b %d %H:%M" if recent else "%b %d  %Y", t)


def list_line(entry: Entry, now: float) -> str:
    """A LIST line in the Unix `ls -l` shape every FTP client parses."""
    if entry.longname and entry.longname.endswith(entry.name):
        return entry.longname
    mode = stat.filemode(entry.permissions) if entry.permissions is not None else "-rw-r--r--"
    return (f"{mode} {entry.nlink or 1:>3} {entry.uid or 0:<8} {entry.gid or 0:<8} "
            f"{entry.size or 0:>12} {_ls_time(entry.mtime, now)} {entry.name}")


def parse_mdtm(stamp: str) -> int | None:
    """RFC 3659 §2.3 time-val (UTC, optional fraction) as epoch seconds; None if invalid."""
    match = re.fullmatch(r"(\d{14})(\.\d+)?", stamp)
    if match is None:
        return None
    try:
        return calendar.timegm(time.strptime(match.group(1), "%Y%m%d%H%M%S"))
    except ValueError:
        return None


def mdtm(mtime: int) -> str:
    """RFC 3659 §2.3 time-val, UTC."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime))


def mlsx_facts(entry: Entry, cdir: bool = False) -> str:
    """RFC 3659 §7 facts then a space and the name (MLSD lines, MLST's middle line)."""
    kind = "cdir" if cdir else ("dir" if entry.is_dir else "file")
    facts = [f"type={kind}"]
    if entry.size is not None and not entry.is_dir:
        facts.append(f"size={entry.size}")
    if entry.mtime is not None:
        facts.append(f"modify={mdtm(entry.mtime)}")
    facts.append("perm=" + ("elcmpfd" if entry.is_dir else "radfw"))
    if entry.permissions is not None:
        facts.append(f"unix.mode={stat.S_IMODE(entry.permissions):04o}")
    return ";".join(facts) + "; " + entry.name


class AsciiToNetwork:
    """TYPE A download: the server's LF line ending to the network's CRLF (RFC 959
    §3.1.1.1). `convert` is false for TYPE I, and for servers whose files end lines with CRLF
    already (profile `line_ending = "crlf"`)."""

    def __init__(self, convert: bool) -> None:
        self.convert = convert

    def feed(self, data: bytes) -> bytes:
        # Every LF, whatever precedes it: stateless, so no chunk boundary can change the
        # result, and a CR before LF in an LF file is content the client should see.
        return data.replace(b"\n", b"\r\n") if self.convert else data


class AsciiFromNetwork:
    """TYPE A upload: CRLF from the network to the server's line ending. A CR at the end of
    one chunk may be the first half of a CRLF split across reads, so it waits for the next."""

    def __init__(self, convert: bool) -> None:
        self.convert = convert
        self._held_cr = False

    def feed(self, data: bytes) -> bytes:
        if not self.convert:
            return data
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._held_cr = True
        return data.replace(b"\r\n", b"\n")

    def flush(self) -> bytes:
        """At the end of the upload: a lone trailing CR is content, not half a line end."""
        held, self._held_cr = self._held_cr, False
        return b"\r" if held and self.convert else b""
