"""A TLS client over memory (ssl.MemoryBIO): sans-I/O, so the same code runs over an SSH
channel, a TCP transport, the control connection and each data connection.

`TlsPipe` turns the server's bytes into plaintext and plaintext into bytes for the server;
it never touches a socket. `TlsServerSide` puts one between a Relay and the endpoint of its
server side (an SSH channel): the relay writes plaintext to it as to any endpoint, and the
endpoint's feed hands it ciphertext as it would hand the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from tunnel.relay import Endpoint, Side, Sink

# What one read takes out of the TLS object: a TLS record is at most 16 KiB, and the pass
# drains every record the last delivery completed.
_READ_SIZE = 256 * 1024
# Plaintext held while the handshake runs, beyond which the client is no longer read: an
# upload must not pile up in memory behind a handshake that crosses a slow WAN.
_HOLD_LIMIT = 256 * 1024

# How long a data connection the client left is drained before it is closed regardless.
DRAIN_LIMIT = 30.0

log = logging.getLogger("tunnel.ftp")


@dataclass(frozen=True)
class Received:
    plaintext: bytes
    to_send: bytes  # handshake replies, alerts
    handshake_done: bool  # the handshake completed in this step
    closed: bool  # the server sent close_notify


class TlsPipe:
    def __init__(self, context: ssl.SSLContext, server_hostname: str,
                 session: ssl.SSLSession | None = None) -> None:
        """`session`: the control connection's TLS session, offered for reuse on a data
        connection (vsftpd's require_ssl_reuse and proftpd's default refuse a data
        connection that does not resume it: it proves the same client)."""
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._incoming, self._outgoing, server_side=False,
                                    server_hostname=server_hostname.strip("[]") or None,
                                    session=session)
        self.handshaken = False
        self.closed = False

    def start(self) -> bytes:
        """The ClientHello."""
        self._handshake()
        return self._outgoing.read()

    def receive(self, data: bytes) -> Received:
        """Bytes from the server. Raises ssl.SSLError (a failed handshake, a certificate
        that does not verify, a corrupt record)."""
        self._incoming.write(data)
        return self._step()

    def receive_eof(self) -> Received:
        self._incoming.write_eof()
        return self._step()

    def send(self, plaintext: bytes) -> bytes:
        self.tls.write(plaintext)
        return self._outgoing.read()

    def close(self) -> bytes:
        """close_notify, so the server knows an upload ended whole and not cut."""
        # Ours goes out; the server's answer is not awaited (it closes anyway).
        with contextlib.suppress(ssl.SSLError):  # SSLWantReadError is one
            self.tls.unwrap()
        return self._outgoing.read()

    @property
    def peer_certificate(self) -> bytes | None:
        return self.tls.getpeercert(binary_form=True)

    @property
    def version(self) -> str:
        return self.tls.version() or "?"

    def _handshake(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.handshaken = True
        return True

    def _step(self) -> Received:
        done = False
        if not self.handshaken:
            done = self._handshake()
        chunks: list[bytes] = []
        while self.handshaken and not self.closed:
            try:
                chunk = self.tls.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            chunks.append(chunk)
        return Received(b"".join(chunks), self._outgoing.read(), done, self.closed)


class TlsServerSide:
    """The server side of a data connection's relay, in TLS. What the relay writes before
    the handshake is over waits for it; a failed handshake or a certificate that is not the
    pinned one ends the connection as lost, before a byte of the file crosses."""

    def __init__(self, relay: Sink, pipe: TlsPipe,
                 check: Callable[[TlsPipe], str | None]) -> None:
        self.relay = relay
        self.pipe = pipe
        self.check = check
        self.side = Side.SERVER
        self._raw: Endpoint | None = None
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._holding_back = False  # the client's side is paused until the handshake ends
        self._held_eof = False
        self._failed = False
        self._notified = False  # our close_notify went out
        self._ended = False  # the relay heard the server's end
        self._draining = False  # the client left: the server's bytes are read and dropped

    # -- the feed's side: what the SSH channel's protocol calls ------------------------------
    def attach(self, side: Side, endpoint: Endpoint) -> None:
        self.side, self._raw = side, endpoint
        self.relay.attach(side, self)
        endpoint.write(self.pipe.start())

    def data(self, side: Side, data: bytes) -> None:
        if self._failed or self._draining:
            return
        try:
            got = self.pipe.receive(data)
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        self._after(got)

    def eof(self, side: Side) -> None:
        if self._draining:
            self._close_now()
            return
        if self._ended:  # the server's close_notify already ended it
            return
        if not self._failed:
            # An end without close_notify raises: the relay hears the end all the same.
            with contextlib.suppress(ssl.SSLError):
                self._after(self.pipe.receive_eof())
        self._end()

    def pause_writing(self, side: Side) -> None:
        self.relay.pause_writing(side)

    def resume_writing(self, side: Side) -> None:
        self.relay.resume_writing(side)

    def lost(self, side: Side, exc: BaseException | None) -> None:
        if self._draining:
            self._raw = None  # gone by itself
            return
        self.relay.lost(side, exc)

    # -- the relay's side: an Endpoint -----------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.pipe.handshaken:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes > _HOLD_LIMIT and not self._holding_back:
                self._holding_back = True
                self.relay.pause_writing(self.side)
        elif self._raw is not None and not self._notified:
            # (After our close_notify nothing more can go in TLS: such bytes are dropped, as a
            # relay drops what arrives for a side that has ended.)
            self._raw.write(self.pipe.send(data))

    def write_eof(self) -> None:
        if not self.pipe.handshaken:
            self._held_eof = True
        elif self._raw is not None:
            self._notify()
            self._raw.write_eof()

    def pause_reading(self) -> None:
        if self._raw is not None:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if self._raw is not None:
            self._raw.resume_reading()

    def close(self) -> None:
        """The relay is done with this connection. If the server has not ended it (the
        client left mid-download), it is not cut: proftpd's mod_tls takes the broken pipe
        a cut TLS data connection gives its next write for a fatal error and drops the whole
        FTP session (a cut clear connection costs only the transfer). So the server is told
        the end in TLS (close_notify, then EOF), and what it still sends is read and dropped
        until it ends the connection, for DRAIN_LIMIT seconds at most."""
        if self._raw is None or self._ended or self._failed or not self.pipe.handshaken:
            self._close_now()
            return
        self._draining = True
        self._notify()
        with contextlib.suppress(OSError):
            self._raw.write_eof()
            self._raw.resume_reading()  # the relay may have paused it
        asyncio.get_running_loop().call_later(DRAIN_LIMIT, self._close_now)

    def _close_now(self) -> None:
        if self._raw is not None:
            raw, self._raw = self._raw, None
            raw.close()

    # -- internals ---------------------------------------------------------------------------
    def _after(self, got: Received) -> None:
        # Called from asyncssh's packet handling: an exception here would end the whole SSH
        # connection, so a connection already closed on our side is simply done.
        if self._raw is None:
            return
        if got.to_send:
            self._raw.write(got.to_send)
        if got.handshake_done:
            refused = self.check(self.pipe)
            if refused is not None:
                self._fail(ssl.SSLError(refused))
                return
            held, self._held, self._held_bytes = self._held, [], 0
            for chunk in held:
                self.write(chunk)
            if self._held_eof:
                self.write_eof()
            if self._holding_back:
                self._holding_back = False
                self.relay.resume_writing(self.side)
        if got.plaintext:
            self.relay.data(self.side, got.plaintext)
        if got.closed:
            # The server's close_notify: its data is complete. Answered at once, because
            # vsftpd waits for ours before it closes the connection (a download would hang
            # until a timeout otherwise), and passed on as the end of the stream.
            self._notify()
            self._end()

    def _notify(self) -> None:
        if not self._notified and self._raw is not None:
            self._notified = True
            self._raw.write(self.pipe.close())

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self.relay.eof(self.side)

    def _fail(self, exc: BaseException) -> None:
        log.warning("TLS on a data connection to the FTP server failed: %s", exc)
        self._failed = True
        self.relay.lost(self.side, ConnectionAbortedError(f"TLS to the FTP server: {exc}"))
        if self._raw is not None:
            self._raw.close()
