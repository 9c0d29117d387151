"""DHCP host entries (MAC -> IPv4) of a running NAT network, changed live.

``networkUpdate`` adds and deletes ``<host>`` entries in the live network and its config;
libvirt rewrites dnsmasq's hosts file and sends it SIGHUP: no network or dnsmasq restart.
That holds only while dnsmasq already serves DHCP, so the network is defined with one
entry from the start (:func:`gateway_host`): the bridge's own MAC and address, which no
guest ever asks for. Adding an entry again is a no-op; a stale entry holding the same MAC
or address (a VM deleted while its node was away) is replaced.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from hypervisor_panel.network import NetworkError, libvirt_message

ADD = libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST
DELETE = libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE
SECTION = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST


def host_xml(mac: str, ip: str) -> str:
    return ET.tostring(ET.Element("host", mac=mac.lower(), ip=ip), encoding="unicode")


def hosts(net: libvirt.virNetwork) -> list[ET.Element]:
    """The IPv4 DHCP host entries of the network's live definition."""
    try:
        root = ET.fromstring(net.XMLDesc(0))  # noqa: S314 - XML from libvirt
    except libvirt.libvirtError as exc:
        raise NetworkError(f"cannot read network {net.name()}: {libvirt_message(exc)}"
                           ) from exc
    return [host for ip in root.findall("ip") if ip.get("family", "ipv4") == "ipv4"
            for host in ip.findall("dhcp/host")]


def _flags(net: libvirt.virNetwork) -> int:
    flags = 0
    if net.isActive():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    if net.isPersistent():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    return flags


def _update(net: libvirt.virNetwork, command: int, xml: str) -> None:
    try:
        net.update(command, SECTION, -1, xml, _flags(net))
    except libvirt.libvirtError as exc:
        raise NetworkError(f"network {net.name()}: cannot update DHCP host {xml}: "
                           f"{libvirt_message(exc)}") from exc


def add_host(net: libvirt.virNetwork, mac: str, ip: str) -> bool:
    """Make ``mac`` get ``ip``; whether anything changed."""
    mac = mac.lower()
    stale = []
    for host in hosts(net):
        same_mac, same_ip = host.get("mac", "").lower() == mac, host.get("ip") == ip
        if same_mac and same_ip:
            return False
        if same_mac or same_ip:
            stale.append(host)
    for host in stale:
        _update(net, DELETE, ET.tostring(host, encoding="unicode"))
    _update(net, ADD, host_xml(mac, ip))
    return True


def remove_host(net: libvirt.virNetwork, mac: str, ip: str | None = None) -> bool:
    """Delete the entries of ``mac`` (and ``ip``, when given); whether any existed."""
    mac = mac.lower()
    found = [h for h in hosts(net) if h.get("mac", "").lower() == mac
             and (ip is None or h.get("ip") == ip)]
    for host in found:
        _update(net, DELETE, ET.tostring(host, encoding="unicode"))
    return bool(found)
