"""Slow clients: connections that send a request one byte at a time (hostile HTTP tests and
the slow-clients benchmark)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def slow_clients(port: int, count: int, every: float = 3.0) -> Iterator[list[socket.socket]]:
    """``count`` connections that send a request one byte every ``every`` seconds: half
    of them are still in their headers, half in a declared 1,000-byte body."""
    body_head = (b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    header_head = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: "
    socks = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(body_head if i % 2 else header_head)
        socks.append(sock)
    done = threading.Event()

    def drip() -> None:
        while not done.wait(every):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.sendall(b"a")

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        yield socks
    finally:
        done.set()
        dripper.join()
        for sock in socks:
            sock.close()
