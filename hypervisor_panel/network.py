"""The network-mode contract: a mode turns a network record into what a node and a VM need.

A mode declares ``name``, ``description`` and an ``options_schema`` (JSON Schema: the API
validates a network's options with it and the UI renders its form), plus a
``nic_options_schema`` for per-interface options (port forwards, ...).

Pure parts (testable against expected XML): :meth:`NetworkMode.network_xml` (the libvirt
network, where the mode has one), :meth:`NetworkMode.apply` (the VM's NIC on a
DomainBuilder), :meth:`NetworkMode.interface` (the ``<interface>`` to hot-plug) and
:meth:`NetworkMode.guest_config` (what the guest must configure, handed to it by the
OS-template step). Side effects: :meth:`prepare` / :meth:`cleanup` on a node (bridge,
libvirt network, nwfilters, firewall), :meth:`attach` / :meth:`detach` for one VM's NIC on
its node (DHCP host entries, port forwards). Side effects get a :class:`NodeContext`: the
node's libvirt connection plus a way to run fixed commands there (argv lists, never a shell).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import libvirt

from .errors import PanelError
from .virt.domain_xml import DomainBuilder, FilterRef, Interface
from .virt.errors import libvirt_message

__all__ = ["Address", "DomainBuilder", "FilterRef", "GuestInterface", "Interface",
           "NetworkError", "NetworkMode", "Nic", "NodeContext", "ensure_libvirt_network",
           "libvirt_message", "remove_libvirt_network"]


class NetworkError(PanelError):
    """A network could not be set up on a node (the message says which and why)."""

    status, code = 422, "network_error"


class NodeContext(Protocol):
    """A node as a network mode sees it."""

    node_id: str
    name: str
    local: bool  # the panel's own machine (commands run here) or a remote node (over SSH)
    demo: bool  # the embedded demo node: run() runs nothing and returns ""

    @property
    def conn(self) -> libvirt.virConnect: ...

    def run(self, argv: list[str], check: bool = True) -> str:
        """Run a fixed command on the node (argv, no shell); its standard output.
        Raises ``errors.NodeCommandError`` when it fails and ``check``."""
        ...


@dataclass(frozen=True)
class Address:
    """An address of a VM's interface, with its subnet's prefix and gateway."""

    address: str
    prefix: int
    gateway: str | None = None
    pool: str | None = None

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefix}"


@dataclass
class Nic:
    """One interface of one VM, as a network mode needs it."""

    vm_id: str
    vm_name: str
    index: int
    mac: str
    addresses: list[Address] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    mtu: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # per nic_options_schema

    @property
    def name(self) -> str:
        """The interface's name inside the guest (net.ifnames=0 naming)."""
        return f"eth{self.index}"

    def of_version(self, version: int) -> list[Address]:
        return [a for a in self.addresses if a.version == version]


@dataclass
class GuestInterface:
    """What the guest configures on one interface."""

    name: str
    mac: str
    dhcp4: bool = False
    addresses: list[str] = field(default_factory=list)  # CIDR notation
    gateway4: str | None = None
    gateway6: str | None = None
    nameservers: list[str] = field(default_factory=list)
    mtu: int | None = None

    def netplan(self) -> dict[str, Any]:
        """This interface as a network-config v2 ethernet entry (cloud-init)."""
        out: dict[str, Any] = {"match": {"macaddress": self.mac}, "set-name": self.name,
                               "dhcp4": self.dhcp4}
        if self.addresses:
            out["addresses"] = list(self.addresses)
        # "0.0.0.0/0" and "::/0", not "default": cloud-init before 23.1 (Debian 12's 22.4)
        # refuses "to: default" and then configures no network at all.
        routes = [{"to": to, "via": gw} for to, gw in (("0.0.0.0/0", self.gateway4),
                                                       ("::/0", self.gateway6)) if gw]
        if routes:
            out["routes"] = routes
        if self.nameservers:
            out["nameservers"] = {"addresses": list(self.nameservers)}
        if self.mtu:
            out["mtu"] = self.mtu
        return out


class NetworkMode:
    """Base class for network modes registered via ``register_network_modes``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    nic_options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "properties": {}}
    #: VMs on this mode get addresses from the network's IP pools.
    uses_ip_pools: ClassVar[bool] = True
    #: Whether a NIC can be added to or removed from a running VM.
    hotplug: ClassVar[bool] = True

    def __init__(self, network: dict[str, Any]) -> None:
        self.network = network
        self.options: dict[str, Any] = network.get("options", {})

    @property
    def libvirt_name(self) -> str:
        """The libvirt network's name on every node."""
        return f"hvp-{self.network['name']}"

    # -- pure parts ------------------------------------------------------------------
    def validate_options(self) -> None:
        """Rules on the options that JSON Schema cannot say; raise ``errors.Invalid``.
        Called when a network is created, before anything is made."""

    def plan_nic(self, nic: Nic, ports_in_use: set[int]) -> dict[str, Any]:
        """The NIC's options with what the mode chooses filled in, before any XML is made
        (user-mode networking picks free host ports for its forwards). ``ports_in_use``:
        host ports other NICs already hold on the panel. Default: the options as given."""
        return dict(nic.options)

    def network_xml(self) -> str | None:
        """The libvirt network XML, or None when the mode defines no libvirt network."""
        return None

    def pool_problem(self, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
                     ) -> str | None:
        """Why an IP pool of ``subnet`` cannot feed this network (None: it can); a NAT
        network, say, takes only pools inside its own range."""
        return None

    def interface(self, nic: Nic) -> Interface:
        """The VM's ``<interface>`` for ``nic`` (default: on the mode's libvirt network)."""
        return Interface("network", self.libvirt_name, mac=nic.mac, mtu=nic.mtu)

    def apply(self, domain: DomainBuilder, nic: Nic) -> None:
        """Add ``nic`` to ``domain`` (modes without an ``<interface>`` add QEMU args)."""
        domain.interfaces.append(self.interface(nic))

    def reach(self, nic: Nic, port: int, node_local: bool) -> tuple[str, int] | None:
        """Where the panel reaches TCP ``port`` of the guest through ``nic`` (None: it
        cannot); default: the NIC's first IPv4 address, else its first IPv6 address."""
        for version in (4, 6):
            for address in nic.of_version(version):
                return address.address, port
        return None

    def guest_config(self, nic: Nic) -> GuestInterface:
        """Static addresses, gateways, DNS and MTU the guest must set on ``nic``."""
        gw4 = next((a.gateway for a in nic.of_version(4) if a.gateway), None)
        gw6 = next((a.gateway for a in nic.of_version(6) if a.gateway), None)
        return GuestInterface(nic.name, nic.mac, addresses=[a.cidr for a in nic.addresses],
                              gateway4=gw4, gateway6=gw6, nameservers=list(nic.dns),
                              mtu=nic.mtu)

    # -- side effects ----------------------------------------------------------------
    def prepare(self, node: NodeContext) -> None:
        """Make the network exist and run on ``node`` (idempotent); default: define and
        start :meth:`network_xml` with autostart."""
        xml = self.network_xml()
        if xml is not None:
            ensure_libvirt_network(node.conn, self.libvirt_name, xml)

    def cleanup(self, node: NodeContext) -> None:
        """Undo :meth:`prepare` on ``node`` (the network is deleted)."""
        if self.network_xml() is not None:
            remove_libvirt_network(node.conn, self.libvirt_name)

    def attach(self, node: NodeContext, nic: Nic) -> None:
        """Per-VM side effects when ``nic`` comes to ``node`` (default: none)."""

    def detach(self, node: NodeContext, nic: Nic) -> None:
        """Undo :meth:`attach` (the NIC or VM goes, or leaves the node)."""


def ensure_libvirt_network(conn: libvirt.virConnect, name: str, xml: str) -> libvirt.virNetwork:
    """Define (if missing), start and autostart a libvirt network; clear errors."""
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        try:
            net = conn.networkDefineXML(xml)
        except libvirt.libvirtError as exc:
            raise NetworkError(f"libvirt refused network {name}: {libvirt_message(exc)}"
                               ) from exc
    try:
        if not net.isActive():
            net.create()
        net.setAutostart(1)
    except libvirt.libvirtError as exc:
        raise NetworkError(f"cannot start network {name}: {libvirt_message(exc)}") from exc
    return net


def remove_libvirt_network(conn: libvirt.virConnect, name: str) -> None:
    """Stop and undefine a libvirt network if it exists."""
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return
    try:
        if net.isActive():
            net.destroy()
        net.undefine()
    except libvirt.libvirtError as exc:
        raise NetworkError(f"cannot remove network {name}: {libvirt_message(exc)}") from exc
