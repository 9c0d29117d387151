"""Anti-spoofing for bridged VMs: the nwfilter ``hvp-clean-traffic`` (IPv4 and IPv6).

libvirt's ``clean-traffic`` drops every IPv6 packet a guest sends. ``hvp-clean-traffic``
keeps its IPv4 part (libvirt's ``no-mac-spoofing``, ``no-ip-spoofing``,
``allow-incoming-ipv4``, ``no-arp-spoofing``, ``no-other-l2-traffic``,
``qemu-announce-self``) and adds ``hvp-no-ipv6-spoofing``: a guest may send IPv6 from its
own addresses (``$IPV6``, every one given), ICMPv6 from ``::`` (duplicate address
detection, MLD) and ICMPv6 or UDP from link-local ``fe80::/10`` (neighbour and router
discovery, DHCPv6); every other IPv6 source is dropped, and all incoming IPv6 is allowed.
Parameters: ``MAC``, ``IP`` (each IPv4 address) and ``IPV6`` (each IPv6 address); a NIC
with no address of a family gets the unspecified address (``0.0.0.0``, ``::``), which
allows nothing a guest could use and stops libvirt from learning an address.

Not pinned: which link-local address a guest uses (guests may derive it from their MAC
or not), and the target field of neighbour advertisements (ebtables cannot see it).
Both filters are shared by the panel's bridged networks on a node: the first one's prepare
defines them, the last one's cleanup removes them (libvirt keeps a filter still in use).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from hypervisor_panel.network import FilterRef, NetworkError, Nic, libvirt_message

FILTER = "hvp-clean-traffic"
IPV6_FILTER = "hvp-no-ipv6-spoofing"
NO_IPV4 = "0.0.0.0"  # noqa: S104 - a filter parameter, not a listening address
NO_IPV6 = "::"

IPV6_FILTER_XML = f"""<filter name='{IPV6_FILTER}' chain='ipv6-ip' priority='-610'>
  <rule action='return' direction='out' priority='100'>
    <ipv6 srcipaddr='::' srcipmask='128' protocol='icmpv6'/>
  </rule>
  <rule action='return' direction='out' priority='110'>
    <ipv6 srcipaddr='fe80::' srcipmask='10' protocol='icmpv6'/>
  </rule>
  <rule action='return' direction='out' priority='120'>
    <ipv6 srcipaddr='fe80::' srcipmask='10' protocol='udp'/>
  </rule>
  <rule action='return' direction='out' priority='500'>
    <ipv6 srcipaddr='$IPV6'/>
  </rule>
  <rule action='drop' direction='out' priority='1000'/>
</filter>"""

FILTER_XML = f"""<filter name='{FILTER}' chain='root'>
  <filterref filter='no-mac-spoofing'/>
  <filterref filter='no-ip-spoofing'/>
  <rule action='accept' direction='out' priority='-650'>
    <mac protocolid='ipv4'/>
  </rule>
  <filterref filter='allow-incoming-ipv4'/>
  <filterref filter='{IPV6_FILTER}'/>
  <rule action='accept' direction='out' priority='-590'>
    <mac protocolid='ipv6'/>
  </rule>
  <filterref filter='allow-incoming-ipv6'/>
  <filterref filter='no-arp-spoofing'/>
  <rule action='accept' direction='inout' priority='-500'>
    <mac protocolid='arp'/>
  </rule>
  <filterref filter='no-other-l2-traffic'/>
  <filterref filter='qemu-announce-self'/>
</filter>"""

#: In definition order (a filter before the filters that reference it).
FILTERS: tuple[tuple[str, str], ...] = ((IPV6_FILTER, IPV6_FILTER_XML), (FILTER, FILTER_XML))


def filterref(nic: Nic) -> FilterRef:
    """``hvp-clean-traffic`` with the NIC's MAC and every address it may send from."""
    params = [("MAC", nic.mac)]
    params += [("IP", a.address) for a in nic.of_version(4)] or [("IP", NO_IPV4)]
    params += [("IPV6", a.address) for a in nic.of_version(6)] or [("IPV6", NO_IPV6)]
    return FilterRef(FILTER, params)


def _shape(el: ET.Element) -> tuple:
    """An element without its uuid and formatting, for comparison."""
    children = tuple(_shape(c) for c in el if c.tag != "uuid")
    return el.tag, tuple(sorted(el.attrib.items())), (el.text or "").strip(), children


def same_filter(a: str, b: str) -> bool:
    return _shape(ET.fromstring(a)) == _shape(ET.fromstring(b))  # noqa: S314 - our XML


def _with_uuid(xml: str, uuid: str) -> str:
    root = ET.fromstring(xml)  # noqa: S314 - our own constant
    uuid_el = ET.Element("uuid")
    uuid_el.text = uuid
    root.insert(0, uuid_el)
    return ET.tostring(root, encoding="unicode")


def ensure_filters(conn: libvirt.virConnect, node_name: str) -> None:
    """Define the filters, or update them in place when they differ (idempotent)."""
    for name, xml in FILTERS:
        try:
            existing = conn.nwfilterLookupByName(name)
        except libvirt.libvirtError:
            existing = None
        try:
            if existing is not None:
                if same_filter(existing.XMLDesc(0), xml):
                    continue
                xml = _with_uuid(xml, existing.UUIDString())
            conn.nwfilterDefineXML(xml)
        except libvirt.libvirtError as exc:
            raise NetworkError(f"node {node_name}: cannot define nwfilter {name}: "
                               f"{libvirt_message(exc)}") from exc


def remove_filters(conn: libvirt.virConnect) -> list[str]:
    """Undefine the filters where no interface uses them; the names removed."""
    removed = []
    for name, _xml in reversed(FILTERS):
        try:
            conn.nwfilterLookupByName(name).undefine()
        except libvirt.libvirtError:
            continue  # missing, or still in use by an interface
        removed.append(name)
    return removed
