"""Serving the app with cheroot, a multi-threaded production WSGI server."""

from __future__ import annotations

import threading

from cheroot import wsgi


def make_server(app, host: str = "127.0.0.1", port: int = 8080, threads: int = 16):
    """A cheroot server bound to ``host:port`` (port 0 picks a free one after ``prepare``)."""
    server = wsgi.Server((host, port), app, numthreads=threads, server_name="hypervisor-panel",
                         shutdown_timeout=1)
    return server


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0):
    """Start serving in a daemon thread; returns (server, actual port)."""
    server = make_server(app, host, port)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="hvp-http", daemon=True)
    thread.start()
    return server, server.bind_addr[1]
