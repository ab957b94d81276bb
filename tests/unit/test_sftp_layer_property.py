"""A property of the ftp-sftp layer, driven by hypothesis: random command sequences with
random transfer endings (clean, reset, timeout, ABOR, no data connection, a lost SSH
connection at any operation) never change a file except through a transfer that ended
cleanly, nor any directory; no temporary upload file outlives its command unless it is
handed on as a leftover; and a closed session says nothing more."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.sftp_fake import FakeSftp, File, run
from tunnel import sftp_ops as L
from tunnel.sftp_layer import SftpLayer
from tunnel.sftp_map import resolve

LINES = ["STOR report.csv", "STOR new.bin", "APPE report.csv", "APPE new.bin",
         "RETR report.csv", "RETR missing", "LIST", "NLST", "MLSD", "RMD", "DELE", "MKD",
         "RNFR", "RNTO ../other", "CWD", "CWD sub", "CDUP", "CWD /home/u", "PWD", "REST 3",
         "REST 0", "REST 99", "TYPE A", "TYPE I", "PASV", "EPSV", "PORT 127,0,0,1,200,10",
         "PORT 10,0,0,9,200,10", "ABOR", "NOOP", "SIZE report.csv", "XRMD", "XMKD"]
ENDINGS = [L.Ending.COMPLETE] * 5 + list(L.Ending)
DATA_MODES = ["", "PASV", "EPSV", "PORT 127,0,0,1,200,10"]
DATA = (L.OpenData, L.Download, L.Upload, L.SendListing)


@dataclass
class Seen:
    actions: list[L.Action]
    upload_ending: L.Ending | None = None


def _drive(layer: SftpLayer, fake: FakeSftp, line: str, data: st.DataObject) -> Seen:
    seen = Seen(list(layer.client_data(line.encode() + b"\r\n")))
    out = seen.actions
    while True:
        operations = [a for a in out if isinstance(a, L.Operation)]
        if not operations:
            return seen
        op = operations[0]
        ending, arrived = L.Ending.COMPLETE, 0
        if isinstance(op, DATA):
            # Clean endings are drawn more often, so that whole transfers happen too.
            ending = data.draw(st.sampled_from(ENDINGS), label=f"{type(op).__name__}")
            arrived = data.draw(st.integers(0, len(fake.payload)), label="bytes before it")
            if ending is L.Ending.ABORTED:  # an ABOR from the client is what aborts
                extra = layer.client_data(b"ABOR\r\n")
                assert L.AbortData() in extra
                seen.actions += extra
        fake.ending = lambda _op, e=ending, n=arrived: (e, n)
        lose = data.draw(st.integers(0, 40), label="ssh lost if 0") == 0
        fake.lose_ssh_at = lambda _op, lose=lose: lose
        if isinstance(op, L.Upload):
            seen.upload_ending = ending if not fake.lose_ssh_at(op) else None
        out = layer.result(fake.carry_out(op))
        seen.actions += out


def _is_part(path: str) -> bool:
    return ".part-" in path


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(DATA_MODES), st.sampled_from(LINES)), min_size=1,
                max_size=25), st.data())
def test_no_file_changes_except_by_a_transfer_that_ended_cleanly(
        lines: list[tuple[str, str]], data: st.DataObject) -> None:
    old = {"/home/u/report.csv": File(b"0123456789", mode=0o755, owner=(7, 7))}
    tokens = iter(range(10_000))
    fake = FakeSftp(files=dict(old), dirs={"/", "/home", "/home/u", "/home/u/sub"},
                    payload=b"NEW-CONTENT")
    layer = SftpLayer(control_host="10.0.0.5", is_client_address=lambda h: h == "127.0.0.1",
                        temporary_token=lambda: f"{next(tokens):04d}", clock=lambda: 0.0)
    layer.start()
    run(layer, fake, layer.client_data(b"USER u\r\nPASS pw\r\n"))
    assert layer.cwd == "/home/u"
    dirs = set(fake.dirs)
    leftovers: set[str] = set()
    rest = 0
    for mode, line in lines:
        if mode:  # a data connection set up first makes whole transfers likely
            _drive(layer, fake, mode, data)
            rest = 0  # REST applies to the next command only, which this was
            if layer.closed:
                break
        before = {p: f for p, f in fake.files.items() if not _is_part(p)}
        target = resolve(layer.cwd, line.split(" ", 1)[1]) if " " in line else ""
        seen = _drive(layer, fake, line, data)
        if layer.closed:
            assert isinstance(seen.actions[-1], L.Close)
            assert layer.client_data(b"NOOP\r\n") == []
        leftovers |= {a.path for a in seen.actions if isinstance(a, L.Leftover)}
        after = {p: f for p, f in fake.files.items() if not _is_part(p)}
        verb = line.split(" ")[0]
        for path in before.keys() | after.keys():
            if before.get(path) == after.get(path):
                continue
            assert verb in ("STOR", "APPE") and path == target, (
                f"{line!r} changed {path}: {before.get(path)} -> {after.get(path)}")
            new, was = after[path], before.get(path, File(b""))
            if verb == "STOR" and not rest:  # a fresh upload: all or nothing
                assert seen.upload_ending is L.Ending.COMPLETE
                assert new.data == fake.payload
                assert new.mode == (was.mode if path in before else 0o644)
            else:  # a resume writes from its offset on and never below it
                start = len(was.data) if verb == "APPE" else rest
                assert new.data[:start] == was.data[:start]
                # In place, as servers do: the first k bytes of the payload (all of them,
                # or fewer for a cut transfer) over the old ones, which stay after them.
                assert any(new.data == was.data[:start] + fake.payload[:k]
                           + was.data[start + k:] for k in range(len(fake.payload) + 1)), (
                    f"{line!r} after REST {rest}: {was.data!r} -> {new.data!r}")
        assert fake.dirs == dirs, f"{line!r} changed the directories"
        # No temporary file outlives its command, except one handed on as a leftover.
        assert {p for p in fake.files if _is_part(p)} <= leftovers
        said = b"".join(a.data for a in seen.actions if isinstance(a, L.ToClient))
        rest = int(line.split()[1]) if verb == "REST" and said.startswith(b"350") else 0
        if layer.closed:
            break
