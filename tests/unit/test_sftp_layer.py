"""The ftp-sftp layer as transcripts: FTP commands in, SFTP operations and replies out,
with an in-memory SFTP server (sftp_fake) carrying the operations out. No sockets, no SSH.
Each data-safety case of the issue "ftp-sftp: lose no file, ever" has its transcript here."""

from __future__ import annotations

import pytest

from tests.unit.sftp_fake import FakeSftp, File, replies, run
from tunnel import sftp_ops as L
from tunnel.sftp_layer import SftpLayer

TARGET = "/home/u/report.csv"


def layer_for(fake: FakeSftp) -> SftpLayer:
    layer = SftpLayer(control_host="10.0.0.5", is_client_address=lambda h: h == "127.0.0.1",
                        temporary_token=lambda: "t0k3n", clock=lambda: 0.0)
    run(layer, fake, layer.start())
    run(layer, fake, layer.client_data(b"USER u\r\nPASS pw\r\n"))
    assert layer.logged_in
    return layer


def run_until(layer: SftpLayer, fake: FakeSftp, out: list[L.Action],
              kind: type) -> list[L.Action]:
    """Carry out operations until the layer asks for one of `kind`, left outstanding (so a
    test can send ABOR meanwhile, or answer it itself)."""
    while not isinstance(out[-1], kind):
        out = layer.result(fake.carry_out(out[-1]))  # type: ignore[arg-type]
    return out


def send(layer: SftpLayer, fake: FakeSftp, line: str) -> list[L.Action]:
    return run(layer, fake, layer.client_data(line.encode() + b"\r\n"))


def operations(actions: list[L.Action]) -> list[L.Action]:
    return [a for a in actions if not isinstance(a, L.ToClient | L.Note)]


@pytest.mark.parametrize("line", ["RMD", "DELE", "MKD", "CWD", "RNFR", "RNTO", "STOR",
                                  "APPE", "RETR", "SIZE", "MDTM", "XRMD", "XMKD", "XCWD",
                                  "RMD  ", "REST", "TYPE", "PORT", "EPRT"])
def test_a_command_missing_its_argument_is_501_and_touches_nothing(line: str) -> None:
    fake = FakeSftp(files={TARGET: File(b"old")})
    layer = layer_for(fake)
    out = send(layer, fake, line)
    assert replies(out)[0].startswith("501 "), replies(out)
    assert operations(out) == []  # not a stat, not a remove, not a data connection
    assert fake.files == {TARGET: File(b"old")} and "/home/u" in fake.dirs


def test_rnfr_without_argument_cannot_move_the_current_directory() -> None:
    fake = FakeSftp()
    layer = layer_for(fake)
    out = send(layer, fake, "RNFR") + send(layer, fake, "RNTO ../other")
    assert [r[:3] for r in replies(out)] == ["501", "503"]
    assert operations(out) == [] and "/home/u" in fake.dirs


def test_rnto_must_follow_rnfr_at_once() -> None:
    fake = FakeSftp(files={TARGET: File(b"old")})
    layer = layer_for(fake)
    out = send(layer, fake, "RNFR report.csv") + send(layer, fake, "NOOP") + send(
        layer, fake, "RNTO moved.csv")
    assert [r[:3] for r in replies(out)] == ["350", "200", "503"]
    assert TARGET in fake.files


def test_clean_stor_over_a_file_replaces_it_keeping_its_mode() -> None:
    fake = FakeSftp(files={TARGET: File(b"old", mode=0o755)}, payload=b"new")
    layer = layer_for(fake)
    send(layer, fake, "TYPE I")
    send(layer, fake, "PASV")
    out = send(layer, fake, "STOR report.csv")
    part = "/home/u/.report.csv.part-t0k3n"
    assert operations(out) == [
        L.Stat(TARGET, follow=False), L.OpenFile(part, L.FileMode.CREATE), L.OpenData(None),
        L.Upload(0, False), L.CloseFile(), L.SetMode(part, 0o755), L.Stat(part),
        L.Rename(part, TARGET)]
    assert [r[:3] for r in replies(out)] == ["150", "226"]
    assert fake.files == {TARGET: File(b"new", mode=0o755)}


@pytest.mark.parametrize("ending", [L.Ending.RESET, L.Ending.TIMEOUT])
def test_a_cut_stor_leaves_the_old_file_exactly_as_it_was(ending: L.Ending) -> None:
    fake = FakeSftp(files={TARGET: File(b"old", mode=0o755)}, payload=b"partial upload",
                    ending=lambda op: (ending, 4) if isinstance(op, L.Upload) else (
                        L.Ending.COMPLETE, 0))
    layer = layer_for(fake)
    send(layer, fake, "EPSV")
    out = send(layer, fake, "STOR report.csv")
    part = "/home/u/.report.csv.part-t0k3n"
    assert operations(out)[-2:] == [L.CloseFile(), L.RemoveFile(part)]
    assert not any(isinstance(a, L.Rename) for a in out)
    assert [r[:3] for r in replies(out)] == ["150", "426"]
    assert fake.files == {TARGET: File(b"old", mode=0o755)}


def test_abor_mid_stor_is_426_then_226_and_keeps_the_old_file() -> None:
    fake = FakeSftp(files={TARGET: File(b"old")})
    layer = layer_for(fake)
    send(layer, fake, "PASV")
    out = layer.client_data(b"STOR report.csv\r\n")
    out = run_until(layer, fake, out, L.Upload)  # up to the transfer, which now runs
    assert layer.client_data(b"ABOR\r\n") == [L.AbortData()]
    out = run(layer, fake, layer.result(L.Ok(L.Transferred(L.Ending.ABORTED, 5))))
    assert [r[:3] for r in replies(out)] == ["426", "226"]
    assert fake.files == {TARGET: File(b"old")}


def test_abor_while_waiting_for_the_data_connection_ends_that_wait() -> None:
    fake = FakeSftp()
    layer = layer_for(fake)
    send(layer, fake, "PASV")
    out = layer.client_data(b"RETR x\r\n")
    fake.files["/home/u/x"] = File(b"x")
    out = run_until(layer, fake, out, L.OpenData)
    assert layer.client_data(b"ABOR\r\n") == [L.AbortData()]
    out = run(layer, fake, layer.result(L.Ok(L.Transferred(L.Ending.ABORTED))))
    assert L.CloseFile() in out and [r[:3] for r in replies(out)] == ["426", "226"]


def test_abor_with_no_transfer_is_226_at_once() -> None:
    fake = FakeSftp()
    layer = layer_for(fake)
    assert replies(send(layer, fake, "ABOR")) == ["226 ABOR: no transfer to abort."]


def test_ssh_lost_mid_stor_is_421_close_and_a_leftover_to_remove_later() -> None:
    fake = FakeSftp(files={TARGET: File(b"old")},
                    lose_ssh_at=lambda op: isinstance(op, L.Upload))
    layer = layer_for(fake)
    send(layer, fake, "PASV")
    out = send(layer, fake, "STOR report.csv")
    assert replies(out)[-1].startswith("421 ")
    assert L.Leftover("/home/u/.report.csv.part-t0k3n") in out
    assert isinstance(out[-1], L.Close) and out[-1].ssh_failure
    assert fake.files[TARGET] == File(b"old")
    assert send(layer, fake, "NOOP") == []  # closed: nothing more is said


def test_ssh_lost_mid_retr_is_421_and_close() -> None:
    fake = FakeSftp(files={TARGET: File(b"data")},
                    lose_ssh_at=lambda op: isinstance(op, L.Download))
    layer = layer_for(fake)
    send(layer, fake, "PASV")
    out = send(layer, fake, "RETR report.csv")
    assert [r[:3] for r in replies(out)] == ["150", "421"]
    assert isinstance(out[-1], L.Close) and out[-1].ssh_failure


def test_sftp_failure_after_data_flowed_is_451_and_removes_the_temporary_file() -> None:
    fake = FakeSftp()
    layer = layer_for(fake)
    send(layer, fake, "PASV")
    out = layer.client_data(b"STOR new.bin\r\n")
    out = run_until(layer, fake, out, L.Upload)
    out = run(layer, fake, layer.result(L.Refused(14, "disk full")))  # SSH_FX_NO_SPACE
    assert replies(out)[-1].startswith("451 ")
    assert fake.files == {}


def test_retr_cut_by_the_client_is_426() -> None:
    fake = FakeSftp(files={TARGET: File(b"data")},
                    ending=lambda op: (L.Ending.RESET, 0) if isinstance(op, L.Download) else (
                        L.Ending.COMPLETE, 0))
    layer = layer_for(fake)
    send(layer, fake, "PASV")
    out = send(layer, fake, "RETR report.csv")
    assert [r[:3] for r in replies(out)] == ["150", "426"]
    assert L.CloseFile() in out


def test_no_data_connection_is_425_without_150() -> None:
    fake = FakeSftp(files={TARGET: File(b"data")},
                    ending=lambda op: (L.Ending.UNAVAILABLE, 0))
    layer = layer_for(fake)
    assert replies(send(layer, fake, "RETR report.csv"))[0].startswith("425 Use PORT")
    send(layer, fake, "PORT 127,0,0,1,200,10")
    out = send(layer, fake, "RETR report.csv")
    assert [r[:3] for r in replies(out)] == ["425"]
    assert L.OpenData(("127.0.0.1", 51210)) in out


def test_port_to_a_foreign_host_or_privileged_port_is_501_and_bad_eprt_family_522() -> None:
    fake = FakeSftp()
    layer = layer_for(fake)
    assert replies(send(layer, fake, "PORT 10,9,9,9,200,10"))[0].startswith("501 PORT "
                                                                             "refused")
    assert replies(send(layer, fake, "PORT 127,0,0,1,0,21"))[0].startswith("501")
    assert replies(send(layer, fake, "EPRT |3|x|5000|"))[0].startswith("522")


def test_stor_over_a_directory_is_550_and_touches_nothing() -> None:
    fake = FakeSftp()
    layer = layer_for(fake)
    out = send(layer, fake, "STOR /home/u")
    assert replies(out)[0].startswith("550") and not any(
        isinstance(a, L.OpenFile) for a in out)


def test_appe_keeps_what_arrived_before_a_cut_for_the_next_resume() -> None:
    fake = FakeSftp(files={TARGET: File(b"head-")}, payload=b"tail",
                    ending=lambda op: (L.Ending.RESET, 2) if isinstance(op, L.Upload) else (
                        L.Ending.COMPLETE, 0))
    layer = layer_for(fake)
    send(layer, fake, "PASV")
    out = send(layer, fake, "APPE report.csv")
    assert replies(out)[-1].startswith("426")
    assert fake.files[TARGET].data == b"head-ta"  # the old bytes are untouched


def test_rest_past_the_end_of_the_file_is_refused_before_any_write() -> None:
    fake = FakeSftp(files={TARGET: File(b"12345")})
    layer = layer_for(fake)
    send(layer, fake, "PASV")
    send(layer, fake, "REST 9")
    out = send(layer, fake, "STOR report.csv")
    assert replies(out)[0].startswith("554") and not any(
        isinstance(a, L.OpenFile) for a in out)


def test_commands_before_login_and_a_refused_login() -> None:
    fake = FakeSftp()
    layer = SftpLayer(control_host="h", is_client_address=lambda h: True)
    run(layer, fake, layer.start())
    out = run(layer, fake, layer.client_data(b"FEAT\r\nPWD\r\nUSER\r\nPASS x\r\nUSER u\r\n"))
    assert [r[:3] for r in replies(out) if not r.startswith(" ")] == [
        "211", "211", "530", "501", "503", "331"]
    out = layer.client_data(b"PASS wrong\r\n")
    assert out == [L.Login("u", "wrong")] and "wrong" not in repr(out)
    out = layer.result(L.LoginFailed("refused", auth_refused=True))
    assert replies(out) == ["530 Login incorrect (the SSH server refused it)."]
    assert replies(layer.client_data(b"PASS again\r\n"))[0].startswith("503")  # USER first


def test_ssh_server_unavailable_at_login_is_421_and_close() -> None:
    layer = SftpLayer(control_host="h", is_client_address=lambda h: True)
    layer.start()
    layer.client_data(b"USER u\r\nPASS p\r\n")
    out = layer.result(L.LoginFailed("connection refused", auth_refused=False))
    assert replies(out)[0].startswith("421") and isinstance(out[-1], L.Close)


def test_a_fixed_user_profile_takes_only_its_own_user() -> None:
    layer = SftpLayer(control_host="h", fixed_user="batch", is_client_address=lambda h: True)
    layer.start()
    out = layer.client_data(b"USER mallory\r\nPASS x\r\n")
    assert replies(out)[-1] == "530 This gateway logs in as batch only."
    assert layer.client_data(b"USER batch\r\nPASS x\r\n")[-1] == L.Login("batch", None)


def test_commands_sent_during_a_transfer_are_answered_after_it_in_order() -> None:
    fake = FakeSftp(files={TARGET: File(b"data")})
    layer = layer_for(fake)
    send(layer, fake, "PASV")
    out = layer.client_data(b"RETR report.csv\r\nPWD\r\nNOOP\r\n")
    assert layer.backlog == 2
    out = run(layer, fake, out)
    assert [r[:3] for r in replies(out)] == ["150", "226", "257", "200"]


def test_help_names_a_commands_syntax() -> None:
    fake = FakeSftp()
    layer = layer_for(fake)
    assert replies(send(layer, fake, "HELP STOR")) == ["214 Syntax: STOR <file>"]


def test_a_malformed_line_is_500_and_the_session_goes_on() -> None:
    fake = FakeSftp()
    layer = layer_for(fake)
    assert [r[:3] for r in replies(send(layer, fake, "\x01\x02 x\r\nNOOP"))] == ["500", "200"]


def test_a_client_that_leaves_mid_stor_hands_its_temporary_file_to_the_glue() -> None:
    fake = FakeSftp(files={TARGET: File(b"old")})
    layer = layer_for(fake)
    send(layer, fake, "PASV")
    out = layer.client_data(b"STOR report.csv\r\n")
    out = run_until(layer, fake, out, L.Upload)
    assert layer.abandon() == "/home/u/.report.csv.part-t0k3n"
    assert layer.closed and layer.result(L.Ok(L.Transferred(L.Ending.RESET))) == []
    assert layer.abandon() is None  # once


def test_listings_hide_uploads_under_way_and_leftovers() -> None:
    fake = FakeSftp(files={TARGET: File(b"x"), "/home/u/.report.csv.part-0123abcd": File(b""),
                           "/home/u/.profile": File(b"")})
    layer = layer_for(fake)
    send(layer, fake, "PASV")
    out = send(layer, fake, "NLST")
    body = next(a for a in out if isinstance(a, L.SendListing)).body
    assert body.split() == [b".profile", b"report.csv"]


def test_rmd_of_the_current_directory_or_above_it_is_refused() -> None:
    fake = FakeSftp(dirs={"/", "/home", "/home/u", "/home/u/empty"})
    layer = layer_for(fake)
    send(layer, fake, "CWD empty")
    for line in ("RMD .", "RMD /home/u/empty", "RMD ..", "XRMD /home/u/empty/"):
        out = send(layer, fake, line)
        assert replies(out)[0].startswith("550") and operations(out) == [], line
    assert "/home/u/empty" in fake.dirs


def test_mfmt_and_site_chmod_set_times_and_modes() -> None:
    fake = FakeSftp(files={TARGET: File(b"x")})
    layer = layer_for(fake)
    out = send(layer, fake, "MFMT 20240102030405 report.csv")
    assert L.SetTimes(TARGET, 1704164645) in out
    assert replies(out) == ["213 Modify=20240102030405; report.csv"]
    out = send(layer, fake, "SITE CHMOD 750 report.csv")
    assert L.SetMode(TARGET, 0o750) in out and replies(out)[0].startswith("200")
    assert fake.files[TARGET].mode == 0o750
    assert replies(send(layer, fake, "MFMT 2024 x"))[0].startswith("501")
    assert replies(send(layer, fake, "SITE UTIME x"))[0].startswith("502")
    assert replies(send(layer, fake, "OPTS MLST type;size;")) == ["200 MLST OPTS type;size;"]
