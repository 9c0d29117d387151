"""A test-only network mode: an isolated libvirt network, addresses from IP pools.

It lets the core's network and IP-pool logic be tested on the libvirt test driver
independently of the built-in mode plugins (which have their own tests).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import ClassVar

from hypervisor_panel.hookspecs import hookimpl
from hypervisor_panel.network import NetworkError, NetworkMode, NodeContext


class IsolatedMode(NetworkMode):
    name: ClassVar[str] = "isolated-test"
    description: ClassVar[str] = "An isolated libvirt network (tests only)"
    options_schema: ClassVar[dict] = {
        "type": "object", "additionalProperties": False,
        "properties": {"mtu": {"type": "integer", "minimum": 576, "maximum": 9000},
                       "missing_on": {"type": "string", "description":
                                      "a node name where the host lacks what it needs"}},
    }

    def prepare(self, node: NodeContext) -> None:
        if node.name == self.options.get("missing_on"):
            raise NetworkError(f"node {node.name}: host bridge hvpt-test does not exist")
        super().prepare(node)

    def network_xml(self) -> str:
        net = ET.Element("network")
        ET.SubElement(net, "name").text = self.libvirt_name
        ET.SubElement(net, "bridge", name=f"hvpt{self.network['name'][:8]}")
        return ET.tostring(net, encoding="unicode")


class NoPoolMode(IsolatedMode):
    name: ClassVar[str] = "nopool-test"
    uses_ip_pools: ClassVar[bool] = False


class TestModes:
    @hookimpl
    def register_network_modes(self):
        return [IsolatedMode, NoPoolMode]
