"""The ``user`` mode: QEMU user-mode networking (``-netdev user``) via ``<qemu:commandline>``.

libvirt's ``<interface type='user'>`` cannot isolate the guest (no ``restrict``), so the
NIC is a pair of QEMU arguments: ``-netdev user,id=hvpnet<index>,restrict=on|off,
hostfwd=tcp:127.0.0.1:HOST-:GUEST,...`` and ``-device virtio-net-pci,netdev=...,mac=MAC``.
The guest gets 10.0.2.15 from QEMU's built-in DHCP; with ``restrict=on`` it reaches
nothing but the forwarded ports. No libvirt network, no hot-plug, no IP pools.

libvirt does not know this device, so it gets a fixed PCI slot that libvirt (which fills
slots from the lowest free one, at start and at hot-plug) leaves alone: slot 0x1e - index
of the root bus (``pci.0``; ``pcie.0`` on q35). Without it QEMU takes the first free slot
for itself, which libvirt has given to another device (the balloon, a hot-plugged disk).
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypervisor_panel.errors import Invalid
from hypervisor_panel.network import (
    DomainBuilder,
    GuestInterface,
    Interface,
    NetworkError,
    NetworkMode,
    Nic,
)

from .ports import LISTEN, pick_port

GUEST_ADDRESS = "10.0.2.15"  # what QEMU's DHCP hands out (gateway 10.0.2.2, DNS 10.0.2.3)
DEFAULT_RANGE = {"min": 20000, "max": 29999}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
HOST_PORT = {"type": "integer", "minimum": 1024, "maximum": 65535}
TOP_SLOT = 0x1E  # 0x1f is the LPC/SATA function on q35
MAX_NICS = 8


class UserMode(NetworkMode):
    """User-mode networking: guest ports reachable on the node's 127.0.0.1 only."""

    name: ClassVar[str] = "user"
    description: ClassVar[str] = ("User-mode (QEMU): no bridge needed; guest ports "
                                  "forwarded from 127.0.0.1; isolated by default")
    uses_ip_pools: ClassVar[bool] = False
    hotplug: ClassVar[bool] = False
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "restrict": {"type": "boolean", "default": True, "title": "Isolate the guest",
                         "description": "QEMU restrict=on: the guest reaches nothing but "
                                        "its forwarded ports (not the host, not the "
                                        "internet)"},
            "port_range": {
                "type": "object", "additionalProperties": False,
                "title": "Automatic host ports", "default": DEFAULT_RANGE,
                "description": "Forwards without a host port get a free one from here",
                "required": ["min", "max"],
                "properties": {"min": {**HOST_PORT, "default": DEFAULT_RANGE["min"]},
                               "max": {**HOST_PORT, "default": DEFAULT_RANGE["max"]}},
            },
        },
    }
    nic_options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "forwards": {
                "type": "array", "maxItems": 32, "title": "Port forwards",
                "description": f"Guest ports reachable on {LISTEN} of the node",
                "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["guest_port"],
                    "properties": {
                        "protocol": {"enum": ["tcp", "udp"], "default": "tcp",
                                     "title": "Protocol"},
                        "guest_port": {**PORT, "title": "Guest port"},
                        "host_port": {**HOST_PORT, "title": "Host port",
                                      "description": "Default: a free port of the "
                                                     "network's range"},
                    },
                },
            },
        },
    }

    @property
    def restrict(self) -> bool:
        return bool(self.options.get("restrict", True))

    @property
    def port_range(self) -> tuple[int, int]:
        rng = self.options.get("port_range") or DEFAULT_RANGE
        return int(rng["min"]), int(rng["max"])

    def validate_options(self) -> None:
        """Rules the schema cannot say; raises Invalid."""
        low, high = self.port_range
        if low > high:
            raise Invalid(f"port_range: min {low} is above max {high}")

    # -- pure parts ------------------------------------------------------------------
    def plan_nic(self, nic: Nic, ports_in_use: set[int]) -> dict[str, Any]:
        """Fill in missing host ports from the range (skipping ``ports_in_use`` and ports
        that cannot be bound on 127.0.0.1 now); refuse ports already held."""
        self.validate_options()
        forwards = [dict(f) for f in nic.options.get("forwards", [])]
        taken = set(ports_in_use)
        for f in forwards:
            if "host_port" in f:
                if f["host_port"] in taken:
                    raise NetworkError(f"host port {f['host_port']} is already forwarded",
                                       code="port_in_use")
                taken.add(f["host_port"])
        for f in forwards:
            f.setdefault("protocol", "tcp")
            if "host_port" not in f:
                f["host_port"] = pick_port(f["protocol"], *self.port_range, taken)
                taken.add(f["host_port"])
        return {**nic.options, "forwards": forwards} if forwards else dict(nic.options)

    def reach(self, nic: Nic, port: int, node_local: bool) -> tuple[str, int] | None:
        """The 127.0.0.1 forward of guest ``port``; only from the node itself (the forward
        listens on the node's loopback)."""
        for f in nic.options.get("forwards", []):
            if f["guest_port"] == port and f.get("protocol", "tcp") == "tcp" and node_local:
                return LISTEN, f["host_port"]
        return None

    def qemu_args(self, nic: Nic, machine: str | None = None) -> list[str]:
        """``-netdev user,...`` and ``-device virtio-net-pci,...`` for ``nic`` (on a domain
        of ``machine`` type: its root bus)."""
        if not 0 <= nic.index < MAX_NICS:
            raise NetworkError(f"VM {nic.vm_name}: at most {MAX_NICS} user-mode NICs")
        netdev_id = f"hvpnet{nic.index}"
        netdev = f"user,id={netdev_id},restrict={'on' if self.restrict else 'off'}"
        for f in nic.options.get("forwards", []):
            if "host_port" not in f:
                raise NetworkError(f"VM {nic.vm_name}: forward of guest port "
                                   f"{f['guest_port']} has no host port (plan the NIC)")
            netdev += (f",hostfwd={f.get('protocol', 'tcp')}:{LISTEN}:{f['host_port']}"
                       f"-:{f['guest_port']}")
        bus = "pcie.0" if machine and "q35" in machine else "pci.0"
        device = (f"virtio-net-pci,netdev={netdev_id},mac={nic.mac},bus={bus},"
                  f"addr={TOP_SLOT - nic.index:#04x}")
        if nic.mtu:
            device += f",host_mtu={nic.mtu}"
        return ["-netdev", netdev, "-device", device]

    def apply(self, domain: DomainBuilder, nic: Nic) -> None:
        domain.qemu_args.extend(self.qemu_args(nic, domain.machine))

    def interface(self, nic: Nic) -> Interface:
        raise NetworkError("a user-mode NIC is a pair of QEMU arguments, not a libvirt "
                           "interface: it cannot be hot-plugged", code="not_hotpluggable")

    def guest_config(self, nic: Nic) -> GuestInterface:
        """DHCP from QEMU (the guest gets 10.0.2.15)."""
        return GuestInterface(nic.name, nic.mac, dhcp4=True, mtu=nic.mtu)
