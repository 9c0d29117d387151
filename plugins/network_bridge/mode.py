"""The ``bridge`` mode: a libvirt network of forward mode ``bridge`` over a host bridge."""

from __future__ import annotations

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

from . import host_bridge, nwfilter

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
IFNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"


def _ifname(title: str, description: str) -> dict[str, Any]:
    return {"type": "string", "title": title, "description": description,
            "pattern": IFNAME_PATTERN, "maxLength": 15}


class BridgeMode(NetworkMode):
    """VMs on a host bridge, with static public addresses from the network's IP pools."""

    name: ClassVar[str] = "bridge"
    description: ClassVar[str] = ("Bridged: VMs on a host bridge with static public IPv4 "
                                  "and IPv6 addresses, anti-spoofing, optional VLAN tag")
    uses_ip_pools: ClassVar[bool] = True
    hotplug: ClassVar[bool] = True
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "oneOf": [{"required": ["bridge"]}, {"required": ["create_bridge"]}],
        "properties": {
            "bridge": _ifname("Host bridge", "An existing bridge on every node, e.g. br0"),
            "create_bridge": {
                "type": "object",
                "title": "Create a bridge",
                "description": "The panel makes this bridge over an interface that has no "
                               "addresses, on every node (and removes it with the network)",
                "additionalProperties": False,
                "required": ["name", "interface"],
                "properties": {
                    "name": _ifname("Bridge name", "The bridge to make, e.g. hvpbr0"),
                    "interface": _ifname("Interface", "Its port, e.g. eth1"),
                },
            },
            "vlan": {"type": "integer", "minimum": 1, "maximum": 4094, "title": "VLAN tag",
                     "description": "802.1Q tag of every VM port (libvirt 9 tags ports on "
                                    "Open vSwitch bridges only)"},
            "openvswitch": {"type": "boolean", "default": False, "title": "Open vSwitch",
                            "description": "The host bridge is an Open vSwitch bridge"},
            "anti_spoofing": {"type": "boolean", "default": True, "title": "Anti-spoofing",
                              "description": "Drop traffic from other MAC, IPv4 or IPv6 "
                                             "addresses than the VM's (nwfilter "
                                             f"{nwfilter.FILTER}; Linux bridges)"},
            "mtu": {"type": "integer", "minimum": 1280, "maximum": 9216, "title": "MTU",
                    "description": "MTU of the VMs' interfaces (and of a bridge the panel "
                                   "makes)"},
        },
    }

    # -- options ---------------------------------------------------------------------
    @property
    def host_bridge(self) -> str:
        create = self.options.get("create_bridge")
        return create["name"] if create else self.options["bridge"]

    @property
    def anti_spoofing(self) -> bool:
        return bool(self.options.get("anti_spoofing", True))

    def validate_options(self) -> None:
        """Rules the schema cannot say; raises Invalid."""
        create = self.options.get("create_bridge")
        if bool(create) == bool(self.options.get("bridge")):
            raise Invalid("give either 'bridge' (an existing bridge) or 'create_bridge'")
        if create and create["name"] == create["interface"]:
            raise Invalid("create_bridge: the bridge and its interface need two names")
        if self.options.get("openvswitch"):
            if create:
                raise Invalid("the panel makes Linux bridges only: give an existing Open "
                              "vSwitch bridge as 'bridge'")
            if self.anti_spoofing:
                raise Invalid("anti-spoofing (ebtables) works on Linux bridges only: set "
                              "anti_spoofing to false on an Open vSwitch bridge")

    # -- pure parts ------------------------------------------------------------------
    def network_xml(self) -> str:
        self.validate_options()
        net = ET.Element("network")
        ET.SubElement(net, "name").text = self.libvirt_name
        ET.SubElement(net, "forward", mode="bridge")
        ET.SubElement(net, "bridge", name=self.host_bridge)
        if self.options.get("openvswitch"):
            ET.SubElement(net, "virtualport", type="openvswitch")
        ET.indent(net)
        return ET.tostring(net, encoding="unicode")

    def interface(self, nic: Nic) -> Interface:
        return Interface("network", self.libvirt_name, mac=nic.mac,
                         mtu=nic.mtu or self.options.get("mtu"),
                         vlan=self.options.get("vlan"),
                         filterref=nwfilter.filterref(nic) if self.anti_spoofing else None)

    def guest_config(self, nic: Nic) -> GuestInterface:
        config = super().guest_config(nic)
        config.mtu = nic.mtu or self.options.get("mtu")
        return config

    # -- side effects ----------------------------------------------------------------
    def prepare(self, node: NodeContext) -> None:
        """Filters, then the host bridge (checked or made), then the libvirt network."""
        xml = self.network_xml()
        created = False
        with _node_lock(node):
            if not getattr(node, "demo", False):
                if self.anti_spoofing:
                    nwfilter.ensure_filters(node.conn, node.name)
                create = self.options.get("create_bridge")
                if create:
                    created = host_bridge.ensure_bridge(
                        node, create["name"], create["interface"], self._owner,
                        self.options.get("mtu"))
                else:
                    host_bridge.require_bridge(node, self.host_bridge)
            try:
                ensure_libvirt_network(node.conn, self.libvirt_name, xml)
            except NetworkError as exc:
                if created:
                    host_bridge.remove_bridge(node, self.host_bridge, self._owner)
                raise NetworkError(f"node {node.name}: {exc.message}") from exc

    def cleanup(self, node: NodeContext) -> None:
        """Remove the libvirt network, the host bridge if prepare made it, and the
        filters when no other bridged network of the panel is left on the node."""
        with _node_lock(node):
            remove_libvirt_network(node.conn, self.libvirt_name)
            if getattr(node, "demo", False):
                return
            if self.options.get("create_bridge"):
                host_bridge.remove_bridge(node, self.host_bridge, self._owner)
            if not _panel_bridge_networks(node):
                nwfilter.remove_filters(node.conn)

    @property
    def _owner(self) -> str:
        return host_bridge.owner_alias(self.libvirt_name)


def _node_lock(node: NodeContext) -> threading.Lock:
    """Prepare and cleanup of bridged networks on one node, one at a time (the filters
    are shared by them)."""
    with _locks_guard:
        return _locks.setdefault(node.node_id, threading.Lock())


def _panel_bridge_networks(node: NodeContext) -> list[str]:
    """The panel's bridged libvirt networks on the node (["?"] when libvirt cannot say)."""
    try:
        return [net.name() for net in node.conn.listAllNetworks()
                if net.name().startswith("hvp-") and ET.fromstring(  # noqa: S314 - libvirt's
                    net.XMLDesc(0)).find("forward[@mode='bridge']") is not None]
    except libvirt.libvirtError:
        return ["?"]
