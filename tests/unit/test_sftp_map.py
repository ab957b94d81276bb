"""The pure half of ftp-sftp: SFTP status -> FTP reply, paths, listings, TYPE A."""

from __future__ import annotations

import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel import sftp_map
from tunnel.sftp_map import AsciiFromNetwork, AsciiToNetwork, Entry


@pytest.mark.parametrize(("status", "verb", "expected"), [
    (sftp_map.FX_NO_SUCH_FILE, "RETR", 550),
    (sftp_map.FX_PERMISSION_DENIED, "RETR", 550),
    (sftp_map.FX_PERMISSION_DENIED, "STOR", 553),
    (sftp_map.FX_FAILURE, "MKD", 550),
    (sftp_map.FX_INVALID_FILENAME, "STOR", 553),
    (sftp_map.FX_DIR_NOT_EMPTY, "RMD", 550),
    (sftp_map.FX_NO_SPACE_ON_FILESYSTEM, "STOR", 452),
    (sftp_map.FX_QUOTA_EXCEEDED, "APPE", 552),
    (sftp_map.FX_OP_UNSUPPORTED, "RNTO", 502),
    (sftp_map.FX_CONNECTION_LOST, "LIST", 421),
    (99, "DELE", 451),  # a status we do not know is a local error, never a success
])
def test_one_table_maps_sftp_status_to_ftp_reply(status: int, verb: str, expected: int) -> None:
    assert sftp_map.ftp_reply_for(status, verb)[0] == expected


def test_a_failure_after_data_flowed_is_451_not_a_name_error() -> None:
    code, text = sftp_map.ftp_reply_for(sftp_map.FX_PERMISSION_DENIED, "STOR", mid_transfer=True)
    assert code == 451 and "aborted" in text
    assert sftp_map.ftp_reply_for(sftp_map.FX_CONNECTION_LOST, "RETR", mid_transfer=True)[0] == 421


@pytest.mark.parametrize(("cwd", "arg", "path"), [
    ("/home/u", "", "/home/u"), ("/home/u", "a/b", "/home/u/a/b"), ("/home/u", "/etc", "/etc"),
    ("/home/u", "..", "/home"), ("/", "..", "/"), ("/home/u", "a/../../x", "/home/x"),
    ("/home/u", "./f.bin", "/home/u/f.bin"),
])
def test_paths_resolve_against_the_working_directory(cwd: str, arg: str, path: str) -> None:
    assert sftp_map.resolve(cwd, arg) == path


def test_quote_path_doubles_inner_quotes() -> None:
    assert sftp_map.quote_path('/a"b') == '"/a""b"'


def test_list_target_drops_ls_options() -> None:
    assert sftp_map.list_target("-la") == ""
    assert sftp_map.list_target("-a -l dir name") == "dir name"
    assert sftp_map.list_target("dir") == "dir"


def test_listing_lines() -> None:
    entry = Entry("f.bin", 1234, stat.S_IFREG | 0o644, 1_700_000_000, 0, 0, 1)
    line = sftp_map.list_line(entry, now=1_700_000_100)
    assert line.startswith("-rw-r--r--") and line.endswith(" f.bin") and " 1234 " in line
    assert sftp_map.list_line(Entry("x", longname="drwx------ 2 u u 40 Jan 1 x"), 0) == \
        "drwx------ 2 u u 40 Jan 1 x"  # the server's own ls -l line, when it sends one
    facts = sftp_map.mlsx_facts(entry)
    assert facts == "type=file;size=1234;modify=20231114221320;perm=radfw;unix.mode=0644; f.bin"
    folder = Entry("d", 4096, stat.S_IFDIR | 0o755, None)
    assert sftp_map.mlsx_facts(folder).startswith("type=dir;perm=")
    assert sftp_map.mdtm(0) == "19700101000000"


def test_ascii_download_turns_lf_into_crlf_and_binary_passes() -> None:
    assert AsciiToNetwork(True).feed(b"a\nb\n") == b"a\r\nb\r\n"
    assert AsciiToNetwork(False).feed(b"a\nb\n") == b"a\nb\n"


@given(st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"xyz"]), max_size=40),
       st.lists(st.integers(min_value=0, max_value=60), max_size=6))
def test_ascii_upload_is_the_same_whatever_the_chunking(parts: list[bytes],
                                                        cuts: list[int]) -> None:
    data = b"".join(parts)
    whole = AsciiFromNetwork(True)
    expected = whole.feed(data) + whole.flush()
    assert expected == data.replace(b"\r\n", b"\n")
    chunked = AsciiFromNetwork(True)
    out, start = b"", 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        out += chunked.feed(data[start:cut])
        start = cut
    assert out + chunked.flush() == expected
