"""A local TCP port forwarded over SSH to a port on a node (``ssh -L`` in paramiko).

The backup engine reads a remote node's disks from QEMU's NBD server, which listens on the
node's loopback only: :func:`forward` opens a listening socket on this machine's loopback
and carries every connection made to it through the node's SSH connection (a
``direct-tcpip`` channel per connection, the host key pinned by the caller's session).
Nothing listens beyond 127.0.0.1 on either side.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Iterator

import paramiko

from ..errors import Unavailable

log = logging.getLogger(__name__)
BUFFER = 1024 * 1024
POLL = 0.5  # seconds between checks for the tunnel's end


def _pump(local: socket.socket, channel: paramiko.Channel, stop: threading.Event) -> None:
    """Copy bytes both ways until both sides have finished sending (an end of file on
    one side is passed on as a half-close, so answers still in flight arrive)."""
    open_ends: list[socket.socket | paramiko.Channel] = [local, channel]
    try:
        while open_ends and not stop.is_set():
            ready, _, _ = select.select(open_ends, [], [], POLL)
            if local in ready:
                data = local.recv(BUFFER)
                if data:
                    channel.sendall(data)
                else:
                    channel.shutdown_write()
                    open_ends.remove(local)
            if channel in ready:
                data = channel.recv(BUFFER)
                if data:
                    local.sendall(data)
                else:
                    with contextlib.suppress(OSError):
                        local.shutdown(socket.SHUT_WR)
                    open_ends.remove(channel)
    except (OSError, paramiko.SSHException) as exc:
        log.debug("tunnel connection ended: %s", exc)
    finally:
        with contextlib.suppress(Exception):
            channel.close()
        with contextlib.suppress(Exception):
            local.close()


def _accept(listener: socket.socket, transport: paramiko.Transport, remote: tuple[str, int],
            stop: threading.Event, pumps: list[threading.Thread]) -> None:
    """Open a channel to ``remote`` for every connection to ``listener``."""
    while not stop.is_set():
        try:
            conn, peer = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        try:
            channel = transport.open_channel("direct-tcpip", remote, peer, timeout=15)
        except (paramiko.SSHException, OSError) as exc:
            log.warning("cannot open a tunnel to %s:%d on the node: %s", *remote, exc)
            conn.close()
            continue
        pump = threading.Thread(target=_pump, args=(conn, channel, stop), daemon=True,
                                name=f"tunnel-{remote[1]}")
        pump.start()
        pumps.append(pump)


@contextlib.contextmanager
def forward(client: paramiko.SSHClient, remote_host: str, remote_port: int
            ) -> Iterator[tuple[str, int]]:
    """``(host, port)`` on this machine's loopback that reaches ``remote_host:remote_port``
    as seen from the node ``client`` is logged in to; closed (with every carried
    connection) when the block ends."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise Unavailable("the SSH connection to the node closed", code="node_ssh")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(POLL)
    stop, pumps = threading.Event(), []
    acceptor = threading.Thread(target=_accept, daemon=True, name="tunnel-accept",
                                args=(listener, transport, (remote_host, remote_port),
                                      stop, pumps))
    acceptor.start()
    try:
        yield "127.0.0.1", int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        acceptor.join(timeout=5)
        for pump in pumps:
            pump.join(timeout=5)
