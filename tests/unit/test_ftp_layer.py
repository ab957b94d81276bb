"""The FTP-aware session as transcripts (mitmproxy playbook style): no sockets, no SSH."""

from __future__ import annotations

from tunnel.ftp_layer import (
    Close,
    ConnectActive,
    ExpectData,
    FtpLayer,
    Note,
    OpenUpstream,
    State,
    ToClient,
    ToServer,
)


def app_layer() -> FtpLayer:
    return FtpLayer(client_host="127.0.0.1", server_host="ftp.example",
                    credentials_from_app=True)


def said(actions: list[object]) -> list[object]:
    """The wire actions only (log notes left out)."""
    return [a for a in actions if not isinstance(a, Note)]


def client_text(actions: list[object]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, ToClient))


def logged_in(layer: FtpLayer) -> None:
    layer.start()
    layer.client_data(b"USER alice\r\nPASS pw\r\n")
    layer.upstream_opened()
    layer.server_data(b"220 real\r\n")
    layer.server_data(b"331 pass?\r\n")
    layer.server_data(b"230 in\r\n")


def test_greets_answers_pre_login_then_replays_the_login() -> None:
    layer = app_layer()
    assert client_text(layer.start()).startswith(b"220 ftp-ssh-tunnel")
    pre = layer.client_data(b"FEAT\r\nOPTS UTF8 ON\r\nSYST\r\nNOOP\r\nAUTH TLS\r\nPWD\r\n")
    text = client_text(pre)
    assert text.startswith(b"211-Features:\r\n EPRT\r\n EPSV\r\n PASV\r\n UTF8\r\n211 End\r\n")
    assert b"200 UTF8" in text and b"215 UNIX" in text and b"\r\n200 OK" in text
    assert b"534 TLS refused" in text and b"530 Please login" in text
    assert not any(isinstance(a, ToServer) for a in pre)  # the server is not even open
    assert said(layer.client_data(b"USER alice\r\n")) == [
        ToClient(b"331 Password required for alice.\r\n")]
    assert said(layer.client_data(b"PASS s3cret\r\n")) == [OpenUpstream("alice", "s3cret")]
    assert layer.state is State.CONNECTING
    assert layer.upstream_opened() == []
    assert layer.server_data(b"220-Welcome\r\n220 to the real server\r\n") == [
        ToServer(b"USER alice\r\n")]
    assert layer.server_data(b"331 Password please\r\n") == [ToServer(b"PASS s3cret\r\n")]
    out = said(layer.server_data(b"230 Logged in\r\n"))
    # The client hears the server's real verdict, with the server's own greeting (it never
    # saw it: we greeted first); the noted OPTS is replayed, its reply eaten.
    assert out == [ToClient(b"230-The FTP server's greeting: Welcome\r\n to the real server"
                            b"\r\n230 Logged in\r\n"), ToServer(b"OPTS UTF8 ON\r\n")]
    assert layer.server_data(b"200 Always in UTF8 mode.\r\n") == []
    assert layer._password is None  # held only until PASS was sent
    assert said(layer.client_data(b"PWD\r\n")) == [ToServer(b"PWD\r\n")]
    assert layer.server_data(b'257 "/"\r\n') == [ToClient(b'257 "/"\r\n')]


def test_ssh_refusal_is_530_and_the_client_may_try_again() -> None:
    layer = app_layer()
    layer.start()
    layer.client_data(b"USER alice\r\nPASS wrong\r\n")
    out = said(layer.upstream_failed("SSH login refused", auth_refused=True))
    assert out == [ToClient(b"530 Login incorrect: the SSH server refused user 'alice'.\r\n")]
    assert layer.state is State.PRE_LOGIN
    assert said(layer.client_data(b"PASS x\r\n")) == [ToClient(b"503 Login with USER first.\r\n")]
    layer.client_data(b"USER alice\r\n")
    assert said(layer.client_data(b"PASS right\r\n")) == [OpenUpstream("alice", "right")]


def test_unreachable_server_is_421_and_close() -> None:
    layer = app_layer()
    layer.start()
    layer.client_data(b"USER a\r\nPASS b\r\n")
    out = layer.upstream_failed("cannot reach SSH server", auth_refused=False)
    assert out[0] == ToClient(b"421 Service not available: cannot reach SSH server\r\n")
    assert isinstance(out[-1], Close) and layer.state is State.CLOSED


def test_ftp_server_rejects_the_replayed_login() -> None:
    layer = app_layer()
    layer.start()
    layer.client_data(b"USER alice\r\nPASS pw\r\n")
    layer.upstream_opened()
    layer.server_data(b"220 hi\r\n331 pw?\r\n")
    assert said(layer.server_data(b"530 Login incorrect.\r\n")) == [
        ToClient(b"530 Login incorrect.\r\n")]
    # Relaying now: a retry as alice goes to the server itself; as bob it would ride alice's
    # SSH login, which is refused.
    assert said(layer.client_data(b"USER alice\r\n")) == [ToServer(b"USER alice\r\n")]
    assert said(layer.client_data(b"USER bob\r\n")) == [ToClient(
        b"530 Log in as another user on a new connection: this one's SSH login is alice's.\r\n")]
    assert said(layer.client_data(b"REIN\r\n"))[0].data.startswith(b"502 ")  # type: ignore[union-attr]


def test_server_greeting_refusal_is_passed_on_and_closes() -> None:
    layer = app_layer()
    layer.start()
    layer.client_data(b"USER a\r\nPASS b\r\n")
    layer.upstream_opened()
    assert layer.server_data(b"120 wait\r\n") == []
    out = layer.server_data(b"421 Too many users\r\n")
    assert out[0] == ToClient(b"421 Too many users\r\n") and isinstance(out[-1], Close)


def test_quit_before_login() -> None:
    layer = app_layer()
    layer.start()
    out = layer.client_data(b"QUIT\r\n")
    assert out[0] == ToClient(b"221 Goodbye.\r\n") and isinstance(out[1], Close)


def test_fixed_credentials_relay_from_the_first_byte() -> None:
    layer = FtpLayer(client_host="127.0.0.1", server_host="h", credentials_from_app=False)
    assert layer.start() == []
    assert layer.server_data(b"220 real\r\n") == [ToClient(b"220 real\r\n")]
    assert layer.client_data(b"USER u\r\n") == [ToServer(b"USER u\r\n")]
    assert said(layer.client_data(b"AUTH TLS\r\n"))[0].data.startswith(b"534")  # type: ignore[union-attr]


def test_passive_replies_register_data_connections() -> None:
    layer = app_layer()
    logged_in(layer)
    assert layer.client_data(b"PASV\r\n") == [ToServer(b"PASV\r\n")]
    out = layer.server_data(b"227 Entering Passive Mode (10,1,2,3,19,137).\r\n")
    # The SSH server connects to the control host, whatever the 227 names (a NAT'd server
    # names an address it cannot be reached at); the client may still ask for 10.1.2.3.
    assert out == [ExpectData("10.1.2.3", "ftp.example", 5001),
                   ToClient(b"227 Entering Passive Mode (10,1,2,3,19,137).\r\n")]
    layer.client_data(b"PASV\r\n")
    out = layer.server_data(b"227 Entering Passive Mode (0,0,0,0,19,137).\r\n")
    assert out[0] == ExpectData("0.0.0.0", "ftp.example", 5001)
    layer.client_data(b"EPSV\r\n")
    out = layer.server_data(b"229 Entering Extended Passive Mode (|||6446|)\r\n")
    assert out[0] == ExpectData(None, "ftp.example", 6446)
    layer.client_data(b"EPSV\r\n")
    assert said(layer.server_data(b"500 EPSV not understood\r\n")) == [
        ToClient(b"500 EPSV not understood\r\n")]


def test_active_mode_becomes_passive_towards_the_server() -> None:
    layer = app_layer()
    logged_in(layer)
    assert layer.client_data(b"EPRT |1|127.0.0.1|40001|\r\n")[0].data.startswith(b"200 EPRT")  # type: ignore[union-attr]
    # The transfer command waits: the proxy asks for EPSV itself; later commands queue.
    assert layer.client_data(b"RETR f\r\nNOOP\r\n") == [ToServer(b"EPSV\r\n")]
    out = layer.server_data(b"229 Entering Extended Passive Mode (|||6446|)\r\n")
    assert out == [ConnectActive("ftp.example", 6446, "127.0.0.1", 40001)]
    assert layer.active_ready(True) == [ToServer(b"RETR f\r\n"), ToServer(b"NOOP\r\n")]
    assert layer.server_data(b"150 Opening\r\n226 Done\r\n200 NOOP\r\n") == [
        ToClient(b"150 Opening\r\n"), ToClient(b"226 Done\r\n"), ToClient(b"200 NOOP\r\n")]


def test_active_mode_falls_back_to_pasv_and_remembers() -> None:
    layer = app_layer()
    logged_in(layer)
    layer.client_data(b"PORT 127,0,0,1,156,65\r\n")
    assert layer.client_data(b"LIST\r\n") == [ToServer(b"EPSV\r\n")]
    assert said(layer.server_data(b"502 No EPSV\r\n")) == [ToServer(b"PASV\r\n")]
    out = layer.server_data(b"227 Entering Passive Mode (10,0,0,9,4,1).\r\n")
    assert out == [ConnectActive("ftp.example", 1025, "127.0.0.1", 40001)]
    layer.active_ready(True)
    layer.server_data(b"226 ok\r\n")
    layer.client_data(b"PORT 127,0,0,1,156,66\r\n")
    assert layer.client_data(b"NLST\r\n") == [ToServer(b"PASV\r\n")]  # no second EPSV try


def test_active_mode_failures_are_425() -> None:
    layer = app_layer()
    logged_in(layer)
    layer.client_data(b"PORT 127,0,0,1,156,65\r\n")
    layer.client_data(b"RETR f\r\n")
    layer.server_data(b"229 (|||6446|)\r\n")
    out = said(layer.active_ready(False, "connection refused"))
    assert out == [ToClient(b"425 Can't open data connection: connection refused\r\n")]
    layer.client_data(b"PORT 127,0,0,1,156,65\r\n")
    layer.client_data(b"RETR f\r\n")
    layer.server_data(b"502 no\r\n")
    assert said(layer.server_data(b"502 no pasv either\r\n"))[0].data.startswith(b"425")  # type: ignore[union-attr]


def test_port_to_a_foreign_host_or_low_port_is_refused() -> None:
    layer = app_layer()
    logged_in(layer)
    bounce = said(layer.client_data(b"PORT 192,0,2,1,156,65\r\n"))
    assert bounce == [ToClient(b"501 PORT refused: 192.0.2.1 is not your address.\r\n")]
    low = said(layer.client_data(b"EPRT |1|127.0.0.1|21|\r\n"))
    assert low == [ToClient(b"501 EPRT refused: privileged port.\r\n")]
    bad = said(layer.client_data(b"EPRT |9|x|1|\r\n"))
    assert bad[0].data.startswith(b"522")  # type: ignore[union-attr]
    # Nothing reached the server, and a transfer now is plain relay (no active state).
    assert layer.client_data(b"RETR f\r\n") == [ToServer(b"RETR f\r\n")]


def test_bad_lines_get_500_and_the_session_goes_on() -> None:
    layer = app_layer()
    layer.start()
    out = said(layer.client_data(b"\x01\x02\r\nNOOP\r\n"))
    assert out[0] == ToClient(b"500 Syntax error, command unrecognized.\r\n")
    assert out[1] == ToClient(b"200 OK.\r\n")


def test_server_garbage_is_421_to_the_client_and_close() -> None:
    layer = app_layer()
    logged_in(layer)
    layer.client_data(b"NOOP\r\n")
    out = layer.server_data(b"this is not ftp\r\n")
    assert out[0].data.startswith(b"421")  # type: ignore[union-attr]
    assert isinstance(out[-1], Close)


def test_server_close_mid_login_is_421() -> None:
    layer = app_layer()
    layer.start()
    layer.client_data(b"USER a\r\nPASS b\r\n")
    layer.upstream_opened()
    out = layer.server_closed()
    assert out[0].data.startswith(b"421") and isinstance(out[-1], Close)  # type: ignore[union-attr]


def test_password_never_in_a_repr() -> None:
    assert "pw" not in repr(OpenUpstream("alice", "pw"))


def test_lost_ssh_connection_is_421_to_the_client() -> None:
    layer = app_layer()
    logged_in(layer)
    out = layer.server_closed(lost=True)
    assert out[0] == ToClient(b"421 Service not available: the SSH connection to the server "
                              b"was lost.\r\n")
    assert isinstance(out[-1], Close)
    normal = app_layer()
    logged_in(normal)
    normal.client_data(b"QUIT\r\n")
    normal.server_data(b"221 bye\r\n")
    assert [type(a) for a in normal.server_closed()] == [Close]  # the server said goodbye


def test_server_gone_silent_mid_transfer_is_421_once() -> None:
    crashed = app_layer()
    logged_in(crashed)
    crashed.client_data(b"RETR big\r\n")
    crashed.server_data(b"150 here it comes\r\n")
    out = said(crashed.server_closed())
    assert out[0] == ToClient(b"421 Service not available: the FTP server closed the control "
                              b"connection.\r\n")
    assert isinstance(out[-1], Close)
    timed_out = app_layer()  # the server's own 421 (an idle timeout) is not said twice
    logged_in(timed_out)
    timed_out.server_data(b"421 Timeout.\r\n")
    assert [type(a) for a in timed_out.server_closed()] == [Close]


def test_user_or_password_not_utf8_is_501_and_echoes_stay_one_clean_line() -> None:
    """Found by `make fuzz`: a user name with bytes that are not UTF-8 used to raise
    UnicodeEncodeError out of the layer (the session died without a reply)."""
    layer = app_layer()
    layer.start()
    out = said(layer.client_data(b"USER al\xffce\r\n"))
    assert out == [ToClient(b"501 User name is not valid UTF-8.\r\n")]
    out = said(layer.client_data(b"USER a\rb\x00c\r\nPASS p\xfe\r\n"))
    assert out == [ToClient(b"331 Password required for a b c.\r\n"),
                   ToClient(b"501 Password is not valid UTF-8.\r\n")]
    assert layer.state.value == "pre-login"  # nothing was sent to SSH; the client may retry


def test_active_connection_ready_after_the_session_closed_says_nothing() -> None:
    """Found by `make fuzz`: an active data connection can finish after the control
    connection closed; the layer must not speak again."""
    layer = app_layer()
    logged_in(layer)
    layer.client_data(b"PORT 127,0,0,1,4,1\r\nRETR f\r\n")
    layer.server_data(b"229 Entering Extended Passive Mode (|||2121|)\r\n")
    assert layer._active_transfer is not None  # the RETR waits for its data connection
    assert isinstance(said(layer.server_closed())[-1], Close)
    assert layer.active_ready(False, "refused") == []


def test_refused_auth_logs_a_capped_argument() -> None:
    """Found by `make fuzz`: the AUTH refusal's log line carried the client's whole argument,
    anything the client chose to put there."""
    layer = app_layer()
    layer.start()
    out = layer.client_data(b"AUTH TLS" + b"x" * 500 + b"PASS secret\r\n")
    notes = [a.message for a in out if isinstance(a, Note)]
    assert len(notes) == 1 and "secret" not in notes[0] and len(notes[0]) < 60
    assert client_text(out).startswith(b"534 ")


def test_a_reply_of_any_length_passes_through_in_parts() -> None:
    """STAT of a directory of 20,000 files: before, over 5,000 lines was 421 and a close."""
    layer = app_layer()
    logged_in(layer)
    assert layer.client_data(b"STAT .\r\n") == [ToServer(b"STAT .\r\n")]
    body = b"".join(b" -rw-r--r-- 1 u u 0 Jan 1 00:00 file%05d\r\n" % n for n in range(20_000))
    reply = b"213-Status of .:\r\n" + body + b"213 End of status\r\n"
    heard = b""
    for start in range(0, len(reply), 65536):  # as the channel delivers it
        out = layer.server_data(reply[start:start + 65536])
        assert not any(isinstance(a, Close) for a in out)
        heard += client_text(out)
    assert heard == reply and layer.state is State.RELAY
    assert layer.client_data(b"NOOP\r\n") == [ToServer(b"NOOP\r\n")]


def test_a_long_reply_where_the_proxy_reads_it_is_421() -> None:
    layer = app_layer()
    layer.start()
    layer.client_data(b"USER alice\r\nPASS pw\r\n")
    layer.upstream_opened()
    banner = b"220-Welcome\r\n" + b" legal notice line\r\n" * 2000 + b"220 ready\r\n"
    out = layer.server_data(banner)
    assert client_text(out).startswith(b"421 ") and isinstance(out[-1], Close)


def test_a_reset_mid_upload_turns_the_servers_226_into_426() -> None:
    """The SSH channel tells the server only "end of file": it takes the cut upload for a
    whole one. The client, who reset it, must not be told it succeeded."""
    layer = app_layer()
    logged_in(layer)
    layer.client_data(b"STOR f.bin\r\n")
    assert client_text(layer.server_data(b"150 Ok to send data.\r\n")).startswith(b"150")
    assert any(isinstance(a, Note) for a in layer.data_connection_reset())
    out = layer.server_data(b"226 Transfer complete.\r\n")
    assert client_text(out).startswith(b"426 Transfer cut short")
    # Only that transfer: the next one's 226 passes as it is.
    layer.client_data(b"STOR g.bin\r\n")
    layer.server_data(b"150 Ok to send data.\r\n")
    assert client_text(layer.server_data(b"226 Transfer complete.\r\n")) == \
        b"226 Transfer complete.\r\n"


def test_a_reset_with_no_transfer_awaiting_its_reply_changes_nothing() -> None:
    """A client that resets a data connection after its download's 226 (SO_LINGER 0) has
    nothing to be corrected, now or at the next transfer."""
    layer = app_layer()
    logged_in(layer)
    assert layer.data_connection_reset() == []
    layer.client_data(b"RETR f.bin\r\n")
    layer.server_data(b"150 Opening.\r\n")
    assert client_text(layer.server_data(b"226 Done.\r\n")) == b"226 Done.\r\n"


def test_a_server_that_noticed_the_cut_itself_is_passed_on() -> None:
    layer = app_layer()
    logged_in(layer)
    layer.client_data(b"STOR f.bin\r\n")
    layer.server_data(b"150 Ok.\r\n")
    layer.data_connection_reset()
    assert client_text(layer.server_data(b"451 Failure writing.\r\n")) == \
        b"451 Failure writing.\r\n"
