"""Built-in network mode ``user``: QEMU user-mode networking, forwards from 127.0.0.1.

No bridge, no libvirt network: for the desktop window on a laptop, and the way the panel
reaches a guest's SSH port in tests. Isolated by default (QEMU's ``restrict=on``).
"""

from hypervisor_panel.hookspecs import hookimpl

from .mode import UserMode


@hookimpl
def register_network_modes(panel):
    return [UserMode]
