"""Serving the app with cheroot, a multi-threaded production WSGI server."""

from __future__ import annotations

import threading

from cheroot import wsgi

LISTEN_BACKLOG = 256  # cheroot's default of 5 resets bursts of new connections


def make_server(app, host: str = "127.0.0.1", port: int = 8080, threads: int = 16):
    """A cheroot server bound to ``host:port`` (port 0 picks a free one after ``prepare``)."""
    server = wsgi.Server((host, port), app, numthreads=threads, server_name="hypervisor-panel",
                         shutdown_timeout=1, request_queue_size=LISTEN_BACKLOG)
    return server


def serve_until(server: wsgi.Server, stop: threading.Event) -> None:
    """Serve a prepared ``server`` in this thread until ``stop`` is set, then stop it fully.

    cheroot's ``stop()`` runs in a helper thread, never in the one running ``serve()``: it
    waits for the ``serve()`` loop to leave, and it must run to its end exactly once (it
    returns early once ``ready`` is False, so an interrupted ``stop()`` is never completed
    and its non-daemon workers keep the process alive). Returns once the workers are joined.
    """
    stopper = threading.Thread(target=lambda: (stop.wait(), server.stop()),
                               name="hvp-http-stop", daemon=True)
    stopper.start()
    try:
        server.serve()
    finally:
        stop.set()
        stopper.join()


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0):
    """Start serving in a daemon thread; returns (server, actual port)."""
    server = make_server(app, host, port)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="hvp-http", daemon=True)
    thread.start()
    return server, server.bind_addr[1]
