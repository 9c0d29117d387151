"""The ``nat`` mode: a libvirt NAT network with its own bridge, dnsmasq and private range."""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import xml.etree.ElementTree as ET
from typing import Any, ClassVar

import libvirt

from hypervisor_panel.errors import Invalid
from hypervisor_panel.network import (
    GuestInterface,
    Interface,
    NetworkError,
    NetworkMode,
    Nic,
    NodeContext,
    ensure_libvirt_network,
    remove_libvirt_network,
)

from . import dhcp, portforward, schema
from .portforward import Forward

BRIDGE_PREFIX = "hvpn-"
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


class NatMode(NetworkMode):
    """A private range behind NAT on each node; addresses from the network's IP pools."""

    name: ClassVar[str] = "nat"
    description: ClassVar[str] = ("NAT: a private range behind the node's address (own "
                                  "bridge and DHCP), optional port forwards to VMs")
    uses_ip_pools: ClassVar[bool] = True
    hotplug: ClassVar[bool] = True
    options_schema: ClassVar[dict[str, Any]] = schema.OPTIONS
    nic_options_schema: ClassVar[dict[str, Any]] = schema.NIC_OPTIONS

    # -- options ---------------------------------------------------------------------
    @property
    def gateway(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.options['address']}/{self.options['prefix']}")

    @property
    def gateway6(self) -> ipaddress.IPv6Interface | None:
        if not self.options.get("ipv6_address"):
            return None
        return ipaddress.IPv6Interface(
            f"{self.options['ipv6_address']}/{self.options.get('ipv6_prefix', 64)}")

    def pool_problem(self, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
                     ) -> str | None:
        """An IP pool must lie inside the network's own range of its IP version."""
        gateway = self.gateway if subnet.version == 4 else self.gateway6
        if gateway is None:
            return (f"NAT network {self.network['name']!r} has no IPv6 range (give it an "
                    "ipv6_address)")
        if not subnet.subnet_of(gateway.network):  # type: ignore[arg-type]
            return (f"pool {subnet} lies outside NAT network {self.network['name']!r}'s "
                    f"range {gateway.network}")
        return None

    def validate_options(self) -> None:
        """Rules the schema cannot say; raises Invalid."""
        try:
            gateways = [self.gateway, self.gateway6]
        except ValueError as exc:
            raise Invalid(f"not an address: {exc}") from exc
        for gw in filter(None, gateways):
            if gw.ip == gw.network.network_address or (
                    gw.version == 4 and gw.ip == gw.network.broadcast_address):
                raise Invalid(f"{gw.ip} is not a host address of {gw.network}")

    @property
    def bridge(self) -> str:
        if self.options.get("bridge"):
            return self.options["bridge"]
        name = BRIDGE_PREFIX + self.network["name"]
        if len(name) <= 15:
            return name
        return f"{BRIDGE_PREFIX}{self.network['name'][:4]}-{self._digest[:5]}"

    @property
    def bridge_mac(self) -> str:
        """The bridge's MAC: fixed, so the reserved DHCP entry matches it."""
        d = self._digest
        return f"52:54:00:{d[0:2]}:{d[2:4]}:{d[4:6]}"

    @property
    def _digest(self) -> str:
        return hashlib.sha256(self.libvirt_name.encode()).hexdigest()

    # -- pure parts ------------------------------------------------------------------
    def network_xml(self) -> str:
        self.validate_options()
        net = ET.Element("network")
        ET.SubElement(net, "name").text = self.libvirt_name
        ET.SubElement(net, "forward", mode="nat")
        ET.SubElement(net, "bridge", name=self.bridge, stp="on", delay="0")
        ET.SubElement(net, "mac", address=self.bridge_mac)
        if self.options.get("mtu"):
            ET.SubElement(net, "mtu", size=str(self.options["mtu"]))
        gw = self.gateway
        ip = ET.SubElement(net, "ip", address=str(gw.ip), prefix=str(gw.network.prefixlen))
        # The bridge's own entry: dnsmasq serves DHCP (static hosts only) from the start.
        ET.SubElement(ET.SubElement(ip, "dhcp"), "host", mac=self.bridge_mac, ip=str(gw.ip))
        if (gw6 := self.gateway6) is not None:
            ET.SubElement(net, "ip", family="ipv6", address=str(gw6.ip),
                          prefix=str(gw6.network.prefixlen))
        ET.indent(net)
        return ET.tostring(net, encoding="unicode")

    def interface(self, nic: Nic) -> Interface:
        iface = super().interface(nic)
        iface.mtu = nic.mtu or self.options.get("mtu")
        return iface

    def guest_config(self, nic: Nic) -> GuestInterface:
        """DHCP (dnsmasq hands out the fixed address) with the same addresses given
        statically too; the bridge is the default gateway and DNS server."""
        config = super().guest_config(nic)
        config.dhcp4 = bool(nic.of_version(4))
        config.gateway4 = config.gateway4 or (str(self.gateway.ip) if nic.of_version(4)
                                              else None)
        gw6 = self.gateway6
        if gw6 is not None and nic.of_version(6):
            config.gateway6 = config.gateway6 or str(gw6.ip)
        config.nameservers = config.nameservers or [str(self.gateway.ip)]
        config.mtu = nic.mtu or self.options.get("mtu")
        return config

    def plan_nic(self, nic: Nic, ports_in_use: set[int]) -> dict[str, Any]:
        """Refuse host ports that another NIC holds or that this NIC names twice."""
        seen: set[tuple[str, int]] = set()
        for f in self.forwards(nic):
            if f.host_port in ports_in_use or (f.protocol, f.host_port) in seen:
                raise NetworkError(f"host port {f.host_port}/{f.protocol} is already "
                                   "forwarded", code="port_in_use")
            seen.add((f.protocol, f.host_port))
        return dict(nic.options)

    @staticmethod
    def forwards(nic: Nic) -> list[Forward]:
        return [Forward(f.get("protocol", "tcp"), int(f["host_port"]), int(f["guest_port"]))
                for f in nic.options.get("port_forwards", [])]

    # -- side effects ----------------------------------------------------------------
    def prepare(self, node: NodeContext) -> None:
        try:
            ensure_libvirt_network(node.conn, self.libvirt_name, self.network_xml())
        except NetworkError as exc:
            raise NetworkError(f"node {node.name}: {exc.message}") from exc

    def cleanup(self, node: NodeContext) -> None:
        """Remove every port forward of this network, then the libvirt network."""
        if not getattr(node, "demo", False):
            portforward.remove(node, portforward.network_tag(self.libvirt_name),
                               prefix=True)
        remove_libvirt_network(node.conn, self.libvirt_name)

    def attach(self, node: NodeContext, nic: Nic) -> None:
        """The NIC's DHCP host entry (live) and its port forwards."""
        address = self._ipv4(nic)
        forwards = self.forwards(nic)
        if forwards and address is None:
            raise NetworkError(f"VM {nic.vm_name}: port forwards need an IPv4 address")
        real = not getattr(node, "demo", False)
        if forwards and real:
            portforward.refuse_node_services(node, forwards)
        if address is not None:
            with self._lock(node):
                dhcp.add_host(self._network(node), nic.mac, address)
        if real:
            label = portforward.tag(self.libvirt_name, nic.vm_id, nic.index)
            if forwards:
                portforward.install(node, label, address or "", self.bridge, forwards)
            else:
                portforward.remove(node, label)

    def detach(self, node: NodeContext, nic: Nic) -> None:
        """Remove the NIC's port forwards and its DHCP host entry."""
        if not getattr(node, "demo", False):
            portforward.remove(node, portforward.tag(self.libvirt_name, nic.vm_id, nic.index))
        try:
            net = node.conn.networkLookupByName(self.libvirt_name)
        except libvirt.libvirtError:
            return  # the network is gone, and its entries with it
        if nic.mac.lower() != self.bridge_mac:
            with self._lock(node):
                dhcp.remove_host(net, nic.mac)

    # -- helpers ---------------------------------------------------------------------
    def _ipv4(self, nic: Nic) -> str | None:
        addresses = nic.of_version(4)
        if not addresses:
            return None
        address = ipaddress.IPv4Address(addresses[0].address)
        if address not in self.gateway.network or address == self.gateway.ip:
            raise NetworkError(f"VM {nic.vm_name}: {address} is not a guest address of "
                               f"{self.gateway.network} (gateway {self.gateway.ip})")
        if nic.mac.lower() == self.bridge_mac:
            raise NetworkError(f"VM {nic.vm_name}: MAC {nic.mac} is the bridge's own")
        return str(address)

    def _network(self, node: NodeContext) -> libvirt.virNetwork:
        try:
            return node.conn.networkLookupByName(self.libvirt_name)
        except libvirt.libvirtError as exc:
            raise NetworkError(f"node {node.name}: network {self.libvirt_name} is not "
                               "defined (prepare the network on this node first)") from exc

    def _lock(self, node: NodeContext) -> threading.Lock:
        with _locks_guard:
            return _locks.setdefault((node.node_id, self.libvirt_name), threading.Lock())
