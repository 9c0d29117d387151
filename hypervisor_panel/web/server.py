"""Serving the app with waitress: whole requests are read before a worker thread sees them.

Why waitress (not cheroot): cheroot gives a worker to a connection as soon as a request
starts, so 16 clients sending a byte every few seconds hold all 16 workers; read deadlines
only shorten that. Waitress reads every connection in one non-blocking loop (poll) and
hands a request to the pool once its headers and whole body are in: slow clients cost a
socket, never a worker. Bodies above ``inbuf_overflow`` wait in a temporary file (uploads
never sit in memory). What this module adds to waitress:

* a per-route body limit: once the headers are in, a body over the app's
  ``body_limit(method, path)`` (``Content-Length``, or what a chunked body reached) is not
  read; the app answers 413 (``TOO_LARGE`` in the environ), then the connection lingers a
  little, dropping what the client still sends (so it reads the answer), and closes;
* deadlines: headers within HEADER_TIMEOUT, the body at MIN_BODY_RATE after a grace; an
  answer that has not moved for ``channel_timeout`` (a stalled download) frees its worker;
* its own errors (malformed requests, a crash before the first byte) in the JSON shape with
  the security headers; a stream the app aborts (``StreamAborted``) ends with the connection
  closed, without the final chunk, so the client sees it cut;
* HTTPS (``use_tls(context)`` before ``prepare()``): the handshake runs in the loop too;
* cheroot's ``prepare()`` / ``bind_addr`` / ``serve()`` / ``stop()``, which callers use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, WSGITask

from ..routes import JSON_BODY_LIMIT, UPLOAD_LIMIT
from .glue import SECURITY_HEADERS, TOO_LARGE, StreamAborted

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 256  # queued new connections (bursts of clients are not reset)
THREADS = 16  # workers: they only ever run complete requests
CONNECTION_LIMIT = 1000  # open connections (idle or slow ones cost a socket each)
IDLE_TIMEOUT = 60  # s an idle keep-alive connection, or a stalled answer, is kept
HEADER_TIMEOUT = 15.0  # s from a request's first byte to the end of its headers
BODY_GRACE = 30.0  # s for a body on top of ...
MIN_BODY_RATE = 16 * 1024  # ... its length at this many bytes/s
LINGER = 5.0  # s spent dropping a refused body after the 413, before closing
READ_SIZE = 256 * 1024  # bytes asked per read: a refused body's rest, TLS (> a record)
STOP_TIMEOUT = 1.0  # s a stop waits for busy workers (they are daemon threads)
ERROR_CODES = {400: "bad_request", 413: "body_too_large", 431: "headers_too_large",
               500: "internal_error", 501: "not_implemented"}


class _Parser(HTTPRequestParser):
    """Waitress's request parser, with the per-route body limit and deadlines."""

    too_large: int | None = None  # the limit the body exceeded (the app answers 413)
    limit: int | None = None

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started = time.monotonic()  # made when the request's first bytes arrive

    def received(self, data: bytes) -> int:
        if self.completed:
            return 0
        consumed = super().received(data)
        if self.error is not None or not self.headers_finished:
            return consumed
        if self.limit is None:
            self.limit = self.adj.hvp_body_limit(self.command, self.path)
        size = self.body_bytes_received if self.chunked else self.content_length
        if size > self.limit:
            self._refuse()
            return len(data)  # dropped, and so is everything that follows
        return consumed

    def _refuse(self) -> None:
        self.too_large = self.limit
        if self.body_rcv is not None:
            self.body_rcv.getbuf().close()
            self.body_rcv = None
        self.completed, self.expect_continue = True, False
        self.connection_close = True
        self.headers["CONNECTION"] = "close"

    def deadline(self) -> float:
        """When the request must be complete (monotonic clock)."""
        if not self.headers_finished:
            return self.started + HEADER_TIMEOUT
        length = self.content_length if not self.chunked else (self.limit or 0)
        return self.started + HEADER_TIMEOUT + BODY_GRACE + length / MIN_BODY_RATE


class _Task(WSGITask):
    def get_environment(self) -> dict[str, Any]:
        environ = super().get_environment()
        if self.request.too_large is not None:
            environ[TOO_LARGE] = self.request.too_large
        return environ

    def execute(self) -> None:
        if self.request.too_large is not None:
            self.channel.linger_after = True
        try:
            super().execute()
        except StreamAborted:
            if not self.wrote_header:
                raise  # nothing sent yet: the channel answers a 500
            # Close without the final chunk (or short of Content-Length): the client sees
            # the transfer cut rather than a complete, truncated file.
            self.close_on_finish, self.chunked_response = True, False


class _ErrorTask(ErrorTask):
    """Errors waitress answers itself, in the panel's JSON shape with its headers."""

    def execute(self) -> None:
        error = self.request.error
        body = json.dumps({"error": {
            "code": ERROR_CODES.get(error.code, "bad_request"),
            "message": f"{error.reason}: {error.body}" if error.body else error.reason,
        }}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"),
                                      ("Cache-Control", "no-store"),
                                      *SECURITY_HEADERS.items()])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    """One connection; after a refused body it lingers, dropping what the client sends."""

    parser_class = _Parser
    task_class = _Task
    error_task_class = _ErrorTask
    linger_after = False  # set by the task of a refused body
    linger_until = 0.0

    def readable(self) -> bool:
        if self.linger_until:
            return not self.will_close
        return super().readable()

    def handle_read(self) -> None:
        if not self.linger_until:
            return super().handle_read()
        try:  # the rest of a refused body: dropped, in large reads
            self.recv(READ_SIZE)  # at EOF, recv() closes the channel
        except OSError:
            self.will_close = True

    def received(self, data: bytes) -> bool:
        if self.linger_until:
            return True
        return super().received(data)

    def handle_close(self) -> None:
        if self.linger_after and not self.linger_until and self.connected:
            try:  # the answer is out: say we are done, then drop what still comes
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            else:
                self.will_close = False
                self.linger_until = time.monotonic() + LINGER
                return
        super().handle_close()


class _TLSChannel(_Channel):
    """A connection over TLS: the handshake first, then records (non-blocking both)."""

    handshaken = want_write = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.started = time.monotonic()

    def _handshake(self) -> None:
        try:
            self.socket.do_handshake()
        except ssl.SSLWantReadError:
            self.want_write = False
        except ssl.SSLWantWriteError:
            self.want_write = True
        except OSError as exc:  # ssl.SSLError included: not TLS, a bad hello, a reset
            log.info("TLS handshake with %s failed: %s", self.addr[0], exc)
            self.handle_close()
        else:
            self.handshaken, self.want_write = True, False

    def readable(self) -> bool:
        return super().readable() if self.handshaken else not self.will_close

    def writable(self) -> bool:
        return super().writable() if self.handshaken else self.want_write or self.will_close

    def handle_write(self) -> None:
        if self.handshaken:
            super().handle_write()
        elif self.will_close:
            self.handle_close()
        else:
            self._handshake()

    def handle_read(self) -> None:
        if not self.handshaken:
            return self._handshake()
        if self.linger_until:  # after shutdown() the socket reads plain bytes: dropped
            return super().handle_read()
        for _record in range(16):  # one record (<= 16 KiB) a read; the SSL object is never
            try:  # used by two threads: a worker only writes once readable() is False
                data = self.socket.recv(READ_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError:  # a close_notify, a reset, a broken record
                data = b""
            if not data:
                return self.handle_close()
            self.last_activity = time.time()
            self.received(data)
            if not self.readable():
                return

    def send(self, data: bytes, do_close: bool = True) -> int:
        try:
            return super().send(data, do_close)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0  # retried with the same bytes, as OpenSSL wants


class _Server(TcpWSGIServer):
    channel_class = _Channel
    ssl_context: ssl.SSLContext | None = None

    def handle_accept(self) -> None:
        if self.ssl_context is None:
            return super().handle_accept()
        try:
            conn, addr = self.socket.accept()
            self.set_socket_options(conn)
            conn = self.ssl_context.wrap_socket(conn, server_side=True,
                                                do_handshake_on_connect=False)
        except OSError:
            return None
        _TLSChannel(self, conn, self.fix_addr(addr), self.adj, map=self._map)
        return None

    def maintenance(self, now: float) -> None:
        """Waitress closes idle connections; this also closes late requests, stalled
        answers and lingering connections whose time is up."""
        super().maintenance(now)
        mono, stalled = time.monotonic(), now - self.adj.channel_timeout
        for channel in list(self.active_channels.values()):
            request = channel.request
            if request is not None and not request.completed and mono > request.deadline():
                why = "its request did not arrive in time"
            elif channel.requests and channel.total_outbufs_len and \
                    channel.last_activity < stalled:
                why = f"it read nothing of its answer for {self.adj.channel_timeout} s"
            elif getattr(channel, "handshaken", True) is False and \
                    mono > channel.started + HEADER_TIMEOUT:
                why = "no TLS handshake in time"
            elif not (channel.linger_until and mono > channel.linger_until):
                continue
            else:
                why = ""  # the linger after a refused body is over
            if why:
                log.info("Closing the connection of %s: %s", channel.addr[0], why)
            channel.handle_close()  # now: a full socket never becomes writable to close it


class PanelServer:
    """The panel's HTTP server with cheroot's interface: ``prepare()`` binds (port 0: a free
    one), ``bind_addr`` says where, ``serve()`` loops in this thread until ``stop()`` (any
    thread, any number of times), which returns once connections, port and workers are gone."""

    def __init__(self, app: Any, host: str, port: int, threads: int = THREADS) -> None:
        self.app, self.host, self.port, self.threads = app, host, port, threads
        self.body_limit: Callable[[str, str], int] = getattr(app, "body_limit", None) or (
            lambda method, path: JSON_BODY_LIMIT)
        self._server: _Server | None = None
        self.tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._serving = self._closed = False

    def adjustments(self) -> Adjustments:
        adj = Adjustments(
            host=self.host, port=self.port, threads=self.threads, backlog=LISTEN_BACKLOG,
            url_scheme="https" if self.tls is not None else "http",
            connection_limit=CONNECTION_LIMIT, channel_timeout=IDLE_TIMEOUT,
            cleanup_interval=1, asyncore_use_poll=True, ident="hypervisor-panel",
            server_name="hypervisor-panel", max_request_header_size=64 * 1024,
            max_request_body_size=UPLOAD_LIMIT + 1, expose_tracebacks=False)
        adj.hvp_body_limit = self.body_limit  # read by _Parser: adj is all a parser gets
        return adj

    def use_tls(self, context: ssl.SSLContext) -> None:
        """Serve HTTPS with ``context`` (a server-side context with its certificate)."""
        if self._server is not None:
            raise RuntimeError("use_tls() comes before prepare()")
        self.tls = context

    def prepare(self) -> None:
        if self._server is None:
            self._server = _Server(self.app, map={}, adj=self.adjustments())
            self._server.ssl_context = self.tls

    @property
    def bind_addr(self) -> tuple[str, int]:
        if self._server is None:
            return self.host, self.port
        return self._server.effective_host, int(self._server.effective_port)

    def serve(self) -> None:
        self.prepare()
        assert self._server is not None
        with self._lock:
            if self._stopping.is_set():
                return
            self._serving = True
        try:
            while not self._stopping.is_set() and self._server._map:
                wasyncore.poll2(self._server.adj.asyncore_loop_timeout, self._server._map)
        finally:
            self._close()
            self._done.set()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            serving = self._serving
        if not serving:
            self._close()
            return
        if not self._done.is_set():
            with contextlib.suppress(OSError):  # closed meanwhile
                self._server.pull_trigger()  # type: ignore[union-attr]  # wake the loop
        self._done.wait(STOP_TIMEOUT + 2)

    def _close(self) -> None:
        """Close every connection (waking workers blocked on them), the port, the workers."""
        with self._lock:
            if self._closed or self._server is None:
                return
            self._closed = True
        server = self._server
        for channel in list(server.active_channels.values()):
            HTTPChannel.handle_close(channel)  # no linger: connected=False wakes writers
        wasyncore.close_all(server._map)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_TIMEOUT)


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8080,
                threads: int = THREADS) -> PanelServer:
    """The server for ``app`` on ``host:port``; call ``prepare()`` to bind it."""
    return PanelServer(app, host, port, threads)


def serve_until(server: PanelServer, stop: threading.Event) -> None:
    """Serve a prepared ``server`` in this thread until ``stop`` is set, then stop it fully.

    ``server.stop()`` runs in a helper thread, never in the one running ``serve()``, and
    nothing else interrupts the loop (the CLI's signal handlers only set ``stop``). Returns
    once the connections, the port and the workers are closed.
    """
    stopper = threading.Thread(target=lambda: (stop.wait(), server.stop()),
                               name="hvp-http-stop", daemon=True)
    stopper.start()
    try:
        server.serve()
    finally:
        stop.set()
        stopper.join()


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0
                    ) -> tuple[PanelServer, int]:
    """Start serving in a daemon thread; returns (server, actual port)."""
    server = make_server(app, host, port)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="hvp-http", daemon=True)
    thread.start()
    return server, server.bind_addr[1]
