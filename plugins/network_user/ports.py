"""Host ports for user-mode forwards: chosen from a range, bindable on 127.0.0.1 now."""

from __future__ import annotations

import socket

from hypervisor_panel.network import NetworkError

LISTEN = "127.0.0.1"
SOCKET_TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


def can_bind(protocol: str, port: int, host: str = LISTEN) -> bool:
    """Whether ``port`` is free for ``protocol`` on ``host`` on the panel's machine."""
    with socket.socket(socket.AF_INET, SOCKET_TYPES[protocol]) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(protocol: str, low: int, high: int, taken: set[int]) -> int:
    """The first port of ``low..high`` not in ``taken`` that can be bound right now."""
    for port in range(low, high + 1):
        if port not in taken and can_bind(protocol, port):
            return port
    raise NetworkError(f"no free {protocol} port on {LISTEN} in {low}-{high}",
                       code="no_free_port")
