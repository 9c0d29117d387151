"""The ``nat`` mode's JSON Schemas: network options and per-NIC options (port forwards)."""

from __future__ import annotations

from typing import Any

IFNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"
IPV4_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_PATTERN = rf"^{IPV4_OCTET}(\.{IPV4_OCTET}){{3}}$"
IPV6_PATTERN = r"^[0-9A-Fa-f:]{2,39}$"
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}

OPTIONS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["address", "prefix"],
    "properties": {
        "address": {"type": "string", "format": "ipv4", "pattern": IPV4_PATTERN,
                    "title": "Gateway address", "default": "10.88.0.1",
                    "description": "IPv4 address of the network's bridge on every node: "
                                   "the VMs' gateway and DNS server"},
        "prefix": {"type": "integer", "minimum": 8, "maximum": 30, "default": 24,
                   "title": "Prefix length", "description": "Of the private range; the "
                   "network's IP pools must lie inside it"},
        "ipv6_address": {"type": "string", "format": "ipv6", "pattern": IPV6_PATTERN,
                         "title": "IPv6 gateway address",
                         "description": "Optional: the bridge's IPv6 address (IPv6 is "
                                        "routed, not NATed)"},
        "ipv6_prefix": {"type": "integer", "minimum": 8, "maximum": 126,
                        "title": "IPv6 prefix length", "description": "Default: 64"},
        "bridge": {"type": "string", "pattern": IFNAME_PATTERN, "maxLength": 15,
                   "title": "Bridge name", "description": "Default: hvpn-<network>, "
                   "shortened with a hash to 15 characters"},
        "mtu": {"type": "integer", "minimum": 1280, "maximum": 9216, "title": "MTU",
                "description": "MTU of the bridge and of the VMs' interfaces"},
    },
    "dependentRequired": {"ipv6_prefix": ["ipv6_address"]},
}
NIC_OPTIONS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port_forwards": {
            "type": "array", "maxItems": 32, "title": "Port forwards",
            "description": "Ports of the node's own addresses forwarded to this VM "
                           "(IPv4; not from 127.0.0.1)",
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["host_port", "guest_port"],
                "properties": {
                    "protocol": {"enum": ["tcp", "udp"], "default": "tcp",
                                 "title": "Protocol"},
                    "host_port": {**PORT, "title": "Node port"},
                    "guest_port": {**PORT, "title": "VM port"},
                },
            },
        },
    },
}

