"""The host bridge under a bridged network, on one node: checked, or made over an interface.

Commands are fixed argv lists run through ``node.run`` (``ip``, JSON output). A bridge the
panel makes is marked with an interface alias naming its network, so that cleanup removes
only what prepare made and never a bridge someone else owns.
"""

from __future__ import annotations

import json
from typing import Any

from hypervisor_panel.errors import PanelError
from hypervisor_panel.network import NetworkError, NodeContext

BRIDGE_KINDS = ("bridge", "openvswitch")


def owner_alias(libvirt_name: str) -> str:
    """The alias that marks a bridge made by the panel for one network."""
    return f"hvp-network:{libvirt_name}"


def run(node: NodeContext, argv: list[str]) -> str:
    """``node.run`` with every failure as a NetworkError (the message names the node)."""
    try:
        return node.run(argv)
    except NetworkError:
        raise
    except PanelError as exc:
        raise NetworkError(exc.message) from exc


def links(node: NodeContext) -> dict[str, dict[str, Any]]:
    """The node's network interfaces by name (``ip -j -d link show``)."""
    return {link["ifname"]: link for link in json.loads(
        run(node, ["ip", "-j", "-d", "link", "show"]) or "[]")}


def _kind(link: dict[str, Any]) -> str | None:
    return link.get("linkinfo", {}).get("info_kind")


def require_bridge(node: NodeContext, name: str) -> None:
    """Fail clearly unless ``name`` is a bridge on ``node``."""
    link = links(node).get(name)
    if link is None:
        raise NetworkError(f"node {node.name}: host bridge {name} does not exist")
    if _kind(link) not in BRIDGE_KINDS:
        raise NetworkError(f"node {node.name}: {name} is not a bridge "
                           f"(it is a {_kind(link) or 'plain'} interface)")


def _global_addresses(node: NodeContext, ifname: str) -> list[str]:
    out = json.loads(run(node, ["ip", "-j", "address", "show", "dev", ifname]) or "[]")
    return [f"{a['local']}/{a['prefixlen']}" for link in out
            for a in link.get("addr_info", []) if a.get("scope") == "global"]


def _check_port(node: NodeContext, bridge: str, interface: str,
                port: dict[str, Any] | None) -> None:
    if port is None:
        raise NetworkError(f"node {node.name}: interface {interface} does not exist")
    master = port.get("master")
    if master not in (None, bridge):
        raise NetworkError(f"node {node.name}: {interface} is already a port of {master}")
    if master is None and (addresses := _global_addresses(node, interface)):
        raise NetworkError(
            f"node {node.name}: {interface} has addresses ({', '.join(addresses)}); a "
            "bridge over it would cut them off: move them to a bridge yourself and use "
            "that bridge (option 'bridge')")


def ensure_bridge(node: NodeContext, name: str, interface: str, owner: str,
                  mtu: int | None = None) -> bool:
    """Make bridge ``name`` with ``interface`` as its port, unless it exists (idempotent);
    whether it was made now.

    An existing bridge must carry ``owner`` (made by the panel for this network); a new
    one is removed again when a later step fails.
    """
    found = links(node)
    bridge = found.get(name)
    if bridge is not None and bridge.get("ifalias") != owner:
        raise NetworkError(f"node {node.name}: {name} already exists and was not made for "
                           "this network; to use it as it is, give it as option 'bridge'")
    port = found.get(interface)
    _check_port(node, name, interface, port)
    created = bridge is None
    try:
        if created:
            run(node, ["ip", "link", "add", "name", name, "type", "bridge"])
            run(node, ["ip", "link", "set", "dev", name, "alias", owner])
        if mtu:
            run(node, ["ip", "link", "set", "dev", name, "mtu", str(mtu)])
        if port is not None and port.get("master") != name:
            run(node, ["ip", "link", "set", "dev", interface, "master", name])
        run(node, ["ip", "link", "set", "dev", interface, "up"])
        run(node, ["ip", "link", "set", "dev", name, "up"])
    except NetworkError:
        if created:
            node.run(["ip", "link", "del", "dev", name], check=False)
        raise
    return created


def remove_bridge(node: NodeContext, name: str, owner: str) -> bool:
    """Delete bridge ``name`` if the panel made it for this network (its port is released)."""
    link = links(node).get(name)
    if link is None or link.get("ifalias") != owner:
        return False
    run(node, ["ip", "link", "del", "dev", name])
    return True
