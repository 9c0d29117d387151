"""The SSH port forward the backups use for remote nodes, through a real sshd on loopback
(to an echo server on 127.0.0.1, as QEMU's NBD server listens on a node's loopback)."""

from __future__ import annotations

import os
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor_panel.cluster import ssh
from hypervisor_panel.cluster.tunnel import forward
from tests.support.cluster import make_client_key, remove_dir, short_tempdir, start_sshd, stop_sshd


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture(scope="module")
def link() -> Iterator[dict]:
    folder = short_tempdir("hvpt-")
    try:
        sshd = start_sshd(folder)
        key, pub = make_client_key(folder / "client_key")
        sshd.authorize_key(pub)
        echo = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
        echo.daemon_threads = True
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        try:
            yield {"sshd": sshd, "key": key, "echo_port": echo.server_address[1]}
        finally:
            echo.shutdown()
            echo.server_close()
            stop_sshd(folder)
    finally:
        remove_dir(folder)


def _session(link: dict):
    sshd = link["sshd"]
    return ssh.session(sshd.host, sshd.port, "root", ssh.HostKey(*sshd.host_key),
                       pkey=ssh.load_private_key(Path(link["key"]).read_text()))


def _round_trip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_connections_to_the_local_end_reach_the_nodes_loopback_port(link: dict):
    payloads = [os.urandom(3 * 1024 * 1024 + i) for i in range(4)]
    answers: list[bytes] = [b""] * len(payloads)
    with _session(link) as client, forward(client, "127.0.0.1", link["echo_port"]) as (
            host, port):
        assert host == "127.0.0.1" and port != link["echo_port"]
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(
            i, _round_trip(port, payloads[i]))) for i in range(len(payloads))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers == payloads  # four at once, each byte-exact
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_closed_port_on_the_node_ends_the_connection_not_the_tunnel(link: dict):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with _session(link) as client:
        with forward(client, "127.0.0.1", closed) as (_host, port), \
                socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.settimeout(10)
            assert sock.recv(1) == b""  # the node refused: the connection just ends
        with forward(client, "127.0.0.1", link["echo_port"]) as (_host, port):
            assert _round_trip(port, b"still fine") == b"still fine"
