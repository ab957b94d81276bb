"""The language between the ftp-sftp layer (`sftp_layer`) and its glue (`ftp_sftp`), as
frozen values (hypercorn's `events.py`): the operations the layer asks for, the actions that
need no answer, and the results the glue gives back. Pure."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tunnel.ftp_commands import Note as Note  # re-exported: actions of this language too
from tunnel.ftp_commands import ToClient as ToClient


# -- operations: the glue carries one out and answers with `result` ----------------------------
@dataclass(frozen=True)
class Login:
    """Open an SFTP session as `user`; value: the home directory (SFTP realpath ".")."""

    user: str
    password: str | None = field(repr=False)

    def __repr__(self) -> str:
        return f"Login(user={self.user!r}, password={'****' if self.password else None})"


@dataclass(frozen=True)
class Stat:
    """Value: the path's `Entry`; `follow=False` is lstat (a symlink is itself)."""

    path: str
    follow: bool = True


@dataclass(frozen=True)
class ReadDir:
    path: str  # value: list[Entry]


@dataclass(frozen=True)
class RealPath:
    path: str  # value: the canonical path


@dataclass(frozen=True)
class MakeDir:
    path: str


@dataclass(frozen=True)
class RemoveDir:
    path: str


@dataclass(frozen=True)
class RemoveFile:
    path: str


@dataclass(frozen=True)
class Rename:
    """Over an existing target, as FTP servers do (posix-rename where the server has it)."""

    source: str
    target: str


@dataclass(frozen=True)
class SetMode:
    path: str
    mode: int  # permission bits only


@dataclass(frozen=True)
class SetTimes:
    path: str
    mtime: int  # seconds since the epoch; the access time gets the same


@dataclass(frozen=True)
class SetOwner:
    path: str
    uid: int
    gid: int


class FileMode(enum.Enum):
    READ = "rb"
    CREATE = "wb"  # a new (temporary) file, empty
    APPEND = "ab"
    UPDATE = "r+b"  # REST+STOR: write at an offset into the existing file


@dataclass(frozen=True)
class OpenFile:
    """Open the session's one transfer file; value: None."""

    path: str
    mode: FileMode


@dataclass(frozen=True)
class CloseFile:
    pass


@dataclass(frozen=True)
class Passive:
    """Be ready for a passive data connection; value: the port to announce."""


@dataclass(frozen=True)
class OpenData:
    """Get this transfer's data connection: the passive one (it may have arrived already)
    or, for `active`, connect to the client's address. Value: a `Transferred` whose ending
    is COMPLETE when the connection is there."""

    active: tuple[str, int] | None


@dataclass(frozen=True)
class Download:
    """Send the open file from `offset` on the data connection, then close it (FIN).
    Value: Transferred. An SFTP failure mid-way resets the data connection (so no client
    takes a cut file for a whole one) and comes back as SftpRefused."""

    offset: int
    to_network: bool  # TYPE A: LF -> CRLF


@dataclass(frozen=True)
class Upload:
    """Write what the data connection brings into the open file from `offset` (None:
    append) until it ends. Value: Transferred, with the ending as it really happened."""

    offset: int | None
    from_network: bool  # TYPE A: CRLF -> LF


@dataclass(frozen=True)
class SendListing:
    body: bytes = field(repr=False)  # value: Transferred


DATA_OPERATIONS = (OpenData, Download, Upload, SendListing)
Operation = (Login | Stat | ReadDir | RealPath | MakeDir | RemoveDir | RemoveFile | Rename
             | SetMode | SetTimes | SetOwner | OpenFile | CloseFile | Passive | OpenData | Download
             | Upload | SendListing)


# -- actions that need no answer ---------------------------------------------------------------
@dataclass(frozen=True)
class AbortData:
    """ABOR: close the data connection now (a transfer on it ends as ABORTED)."""


@dataclass(frozen=True)
class Leftover:
    """A temporary upload file that could not be removed (the SSH connection was lost):
    remove it at this user's next login."""

    path: str


@dataclass(frozen=True)
class Close:
    reason: str
    ssh_failure: bool = False  # the SSH connection was lost (audit: ssh_failure)


Action = Operation | ToClient | AbortData | Leftover | Note | Close


# -- results -----------------------------------------------------------------------------------
class Ending(enum.Enum):
    """How a data connection's use ended, as it really happened."""

    COMPLETE = "complete"  # every byte moved and the connection ended with a FIN
    RESET = "reset"  # the client reset or cut it
    ABORTED = "aborted"  # ABOR
    TIMEOUT = "timeout"  # it never came, or stalled
    UNAVAILABLE = "unavailable"  # no data connection could be opened (425)


@dataclass(frozen=True)
class Transferred:
    ending: Ending
    count: int = 0  # file bytes moved (after TYPE A conversion, as the file has them)
    detail: str = ""


@dataclass(frozen=True)
class Ok:
    value: object = None


@dataclass(frozen=True)
class Refused:
    """The SFTP server refused the operation (SSH_FX_* status, RFC draft §9.1)."""

    status: int
    reason: str = ""


@dataclass(frozen=True)
class Lost:
    """The SSH connection (or the SFTP channel on it) is gone."""

    detail: str


@dataclass(frozen=True)
class LoginFailed:
    message: str
    auth_refused: bool


Result = Ok | Refused | Lost | LoginFailed
