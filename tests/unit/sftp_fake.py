"""An in-memory SFTP server and data connection that carry out `sftp_layer` operations,
for transcript and property tests of the ftp-sftp layer. Pure: no sockets, no clock."""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tunnel import sftp_ops as L
from tunnel.sftp_layer import SftpLayer
from tunnel.sftp_map import FX_FAILURE, FX_NO_SUCH_FILE, Entry

OWNER = (1000, 1000)


@dataclass(frozen=True)
class File:
    data: bytes
    mode: int = 0o644
    owner: tuple[int, int] = OWNER


@dataclass
class FakeSftp:
    """Files by absolute path; directories as a set. `ending` decides how each data
    transfer ends (and how many bytes of `payload` arrive before a cut)."""

    files: dict[str, File] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/", "/home", "/home/u"})
    payload: bytes = b"new content\n"
    ending: Callable[[L.Operation], tuple[L.Ending, int]] = (
        lambda op: (L.Ending.COMPLETE, 1 << 62))
    lose_ssh_at: Callable[[L.Operation], bool] = lambda op: False
    chown_allowed: bool = False
    open_file: tuple[str, L.FileMode] | None = None
    lost: bool = False
    log: list[L.Operation] = field(default_factory=list)

    def carry_out(self, op: L.Operation) -> L.Result:
        self.log.append(op)
        if self.lost or self.lose_ssh_at(op):
            self.lost = True
            return L.Lost("test: connection lost")
        try:
            return L.Ok(self._do(op))
        except _Status as exc:
            return L.Refused(exc.status, "test refusal")

    def _do(self, op: L.Operation) -> object:
        if isinstance(op, L.Login):
            return "/home/u"
        if isinstance(op, L.Stat):
            return self._entry(op.path)
        if isinstance(op, L.ReadDir):
            if op.path not in self.dirs:
                raise _Status(FX_NO_SUCH_FILE)
            names = [p for p in [*self.files, *self.dirs] if posixpath.dirname(p) == op.path
                     and p != op.path]
            return [replace(self._entry(p), name=posixpath.basename(p)) for p in names]
        if isinstance(op, L.RealPath):
            return op.path
        if isinstance(op, L.MakeDir):
            if op.path in self.dirs or op.path in self.files:
                raise _Status(FX_FAILURE)
            self.dirs.add(op.path)
        elif isinstance(op, L.RemoveDir):
            if op.path not in self.dirs or any(p.startswith(op.path + "/") for p in
                                               [*self.files, *self.dirs]):
                raise _Status(FX_FAILURE)
            self.dirs.remove(op.path)
        elif isinstance(op, L.RemoveFile):
            if op.path not in self.files:
                raise _Status(FX_NO_SUCH_FILE)
            del self.files[op.path]
        elif isinstance(op, L.Rename):
            if op.source not in self.files:
                raise _Status(FX_NO_SUCH_FILE)
            self.files[op.target] = self.files.pop(op.source)
        elif isinstance(op, L.SetMode):
            self.files[op.path] = replace(self.files[op.path], mode=op.mode)
        elif isinstance(op, L.SetOwner):
            if not self.chown_allowed:
                raise _Status(3)  # permission denied
            self.files[op.path] = replace(self.files[op.path], owner=(op.uid, op.gid))
        elif isinstance(op, L.OpenFile):
            return self._open(op)
        elif isinstance(op, L.CloseFile):
            self.open_file = None
        elif isinstance(op, L.Passive):
            return 40000
        elif isinstance(op, L.OpenData):
            ending, _ = self.ending(op)
            return L.Transferred(ending if ending is not L.Ending.RESET else
                                 L.Ending.COMPLETE)
        elif isinstance(op, L.Upload):
            return self._upload(op)
        elif isinstance(op, L.Download | L.SendListing):
            ending, _ = self.ending(op)
            return L.Transferred(ending)
        return None

    def _entry(self, path: str) -> Entry:
        if path in self.dirs:
            return Entry(posixpath.basename(path) or "/", 4096, stat.S_IFDIR | 0o755, 0,
                         *OWNER)
        if path in self.files:
            f = self.files[path]
            return Entry(posixpath.basename(path), len(f.data), stat.S_IFREG | f.mode, 0,
                         *f.owner)
        raise _Status(FX_NO_SUCH_FILE)

    def _open(self, op: L.OpenFile) -> None:
        if posixpath.dirname(op.path) not in self.dirs or op.path in self.dirs:
            raise _Status(FX_NO_SUCH_FILE)
        if op.mode is L.FileMode.CREATE:
            self.files[op.path] = File(b"")
        elif op.path not in self.files:
            if op.mode is not L.FileMode.APPEND:
                raise _Status(FX_NO_SUCH_FILE)
            self.files[op.path] = File(b"")
        self.open_file = (op.path, op.mode)

    def _upload(self, op: L.Upload) -> L.Transferred:
        assert self.open_file is not None
        path, _ = self.open_file
        ending, arrived = self.ending(op)
        data = self.payload[:arrived] if ending is not L.Ending.COMPLETE else self.payload
        old = self.files[path]
        offset = len(old.data) if op.offset is None else op.offset
        content = old.data[:offset] + data + old.data[offset + len(data):]
        self.files[path] = replace(old, data=content)
        return L.Transferred(ending, len(data))


class _Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def run(layer: SftpLayer, fake: FakeSftp, actions: list[L.Action]) -> list[L.Action]:
    """Carry out every operation the layer asks for until it waits on the client; returns
    every action seen, operations included, in order."""
    seen: list[L.Action] = []
    while actions:
        seen += actions
        operations = [a for a in actions if not isinstance(
            a, L.ToClient | L.Note | L.Close | L.AbortData | L.Leftover)]
        assert len(operations) <= 1, f"more than one operation at once: {operations}"
        actions = layer.result(fake.carry_out(operations[0])) if operations else []
    return seen


def replies(actions: list[L.Action]) -> list[str]:
    """The client's replies, as text lines."""
    text = b"".join(a.data for a in actions if isinstance(a, L.ToClient)).decode()
    return [line for line in text.split("\r\n") if line]
