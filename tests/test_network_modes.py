"""The built-in network modes: ``bridge``, ``nat`` and ``user``.

Two tiers:
- PURE: each mode's network XML, ``<interface>`` and domain (a DomainBuilder with the NIC
  applied) against expected files (tests/data/expected/network-*.xml), every document
  validated with libvirt's schemas (``virt-xml-validate``); guest configs and their
  netplan; host-port planning; the options rules. Plus the embedded demo node (libvirt's
  test driver): prepare, DHCP host entries, cleanup.
- REAL (``slow``, ``..._real``): the system libvirtd (qemu:///system) with a tiny local
  NodeContext: a NAT network with dnsmasq, DHCP host entries changed live (dnsmasq keeps
  its PID), port forwards (iptables) in place and gone again, and a forward that really
  reaches a listener in a namespace on the NAT bridge; bridged networks over a bridge the
  test makes, a missing bridge, a bridge the panel makes; anti-spoofing with an nwfilter
  binding on a veth port (no guest needed) and pings between two namespaces.
VLAN tags cannot run here (no vlan links, no bridge vlan_filtering, no Open vSwitch in
this kernel; libvirt 9.0 tags ports only on Open vSwitch): their XML is validated only.
Addresses: 10.247.x.0/24 (NAT), 203.0.113.0/24 and 2001:db8::/64 inside namespaces,
198.51.100.248/29 on host veths; never the machine's uplink 192.0.2.0/24. Every name
the real tests make contains ``hvpm`` (links, namespaces, networks, domains, VM ids).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from hypervisor_panel_plugins.network_bridge import host_bridge, nwfilter
from hypervisor_panel_plugins.network_bridge.mode import BridgeMode
from hypervisor_panel_plugins.network_nat import dhcp, portforward
from hypervisor_panel_plugins.network_nat.mode import NatMode
from hypervisor_panel_plugins.network_nat.portforward import Forward
from hypervisor_panel_plugins.network_user import ports
from hypervisor_panel_plugins.network_user.mode import UserMode

from hypervisor_panel.errors import Invalid, NodeCommandError
from hypervisor_panel.network import Address, FilterRef, NetworkError, Nic
from hypervisor_panel.plugins import get_plugin_manager
from hypervisor_panel.registry import Registry
from hypervisor_panel.validation import validate
from hypervisor_panel.virt.domain_xml import DomainBuilder, Interface
from tests.support.realvirt import SYSTEM_URI, ensure_libvirtd

DATA = Path(__file__).parent / "data"
EXPECTED = DATA / "expected"
UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
MAC = "52:54:00:7e:00:10"


# -- helpers ---------------------------------------------------------------------------
def xml_validates(xml: str, kind: str, tmp_path: Path) -> None:
    if not shutil.which("virt-xml-validate"):
        pytest.skip("virt-xml-validate (libvirt-clients) is not installed")
    path = tmp_path / f"{kind}-{uuid.uuid4().hex[:8]}.xml"
    path.write_text(xml)
    proc = subprocess.run(["virt-xml-validate", str(path), kind], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def expected(name: str) -> str:
    return (EXPECTED / name).read_text().strip()


def domain_with(mode, *nics: Nic) -> str:
    dom = DomainBuilder(name="web1", uuid=UUID, vm_id="vm1", domain_type="qemu",
                        memory_mib=256, vcpus=1, serial_log=False)
    for nic in nics:
        mode.apply(dom, nic)
    return dom.to_xml()


def public_nic(**overrides) -> Nic:
    values = dict(vm_id="vm1", vm_name="web1", index=0, mac=MAC,
                  addresses=[Address("203.0.113.10", 24, "203.0.113.1", "pub4"),
                             Address("2001:db8::10", 64, "2001:db8::1", "pub6")],
                  dns=["203.0.113.53"])
    values.update(overrides)
    return Nic(**values)


def nat_nic(**overrides) -> Nic:
    values = dict(vm_id="vm1", vm_name="web1", index=0, mac=MAC,
                  addresses=[Address("10.88.0.10", 24, None, "priv")],
                  options={"port_forwards": [
                      {"protocol": "tcp", "host_port": 2222, "guest_port": 22}]})
    values.update(overrides)
    return Nic(**values)


BRIDGE = BridgeMode({"name": "pub", "options": {"bridge": "br0"}})
NAT = NatMode({"name": "priv", "options": {"address": "10.88.0.1", "prefix": 24}})
USER = UserMode({"name": "local", "options": {}})


# -- registration and schemas ------------------------------------------------------------
def test_the_three_modes_register_through_entry_points():
    modes = Registry.collect(get_plugin_manager(), panel=None).network_modes
    assert {"bridge": BridgeMode, "nat": NatMode, "user": UserMode}.items() <= modes.items()
    assert (BridgeMode.uses_ip_pools, NatMode.uses_ip_pools, UserMode.uses_ip_pools) == \
        (True, True, False)
    assert (BridgeMode.hotplug, NatMode.hotplug, UserMode.hotplug) == (True, True, False)


@pytest.mark.parametrize("mode, options", [
    (BridgeMode, {"bridge": "br0"}),
    (BridgeMode, {"create_bridge": {"name": "hvpbr0", "interface": "eth1"}, "vlan": 42,
                  "anti_spoofing": False, "mtu": 9000}),
    (NatMode, {"address": "10.88.0.1", "prefix": 24, "bridge": "hvpnat0",
               "ipv6_address": "2001:db8:88::1", "ipv6_prefix": 64}),
    (UserMode, {}),
    (UserMode, {"restrict": False, "port_range": {"min": 40000, "max": 40010}}),
])
def test_good_options_pass_the_schema(mode, options):
    validate(options, mode.options_schema)


@pytest.mark.parametrize("mode, options", [
    (BridgeMode, {}),
    (BridgeMode, {"bridge": "br0", "create_bridge": {"name": "b", "interface": "e"}}),
    (BridgeMode, {"bridge": "br0;reboot"}),
    (BridgeMode, {"bridge": "a-name-that-is-too-long"}),
    (BridgeMode, {"bridge": "br0", "vlan": 4095}),
    (BridgeMode, {"bridge": "br0", "colour": "blue"}),
    (NatMode, {"address": "10.88.0.300", "prefix": 24}),
    (NatMode, {"address": "10.88.0.1"}),
    (NatMode, {"address": "10.88.0.1", "prefix": 24, "ipv6_address": "fe80::1%eth0"}),
    (NatMode, {"address": "10.88.0.1", "prefix": 24, "ipv6_prefix": 64}),
    (UserMode, {"port_range": {"min": 80, "max": 90}}),
    (UserMode, {"restrict": "yes"}),
])
def test_bad_options_fail_the_schema(mode, options):
    with pytest.raises(Invalid):
        validate(options, mode.options_schema)


def test_nic_options_schemas():
    validate({"port_forwards": [{"protocol": "udp", "host_port": 5353, "guest_port": 53}]},
             NatMode.nic_options_schema)
    validate({"forwards": [{"guest_port": 22}, {"protocol": "udp", "guest_port": 53,
                                                 "host_port": 20053}]},
             UserMode.nic_options_schema)
    for bad, schema in [({"port_forwards": [{"host_port": 0, "guest_port": 22}]},
                         NatMode.nic_options_schema),
                        ({"forwards": [{"protocol": "icmp", "guest_port": 22}]},
                         UserMode.nic_options_schema),
                        ({"anything": 1}, BridgeMode.nic_options_schema)]:
        with pytest.raises(Invalid):
            validate(bad, schema)


@pytest.mark.parametrize("options, message", [
    ({"create_bridge": {"name": "eth1", "interface": "eth1"}}, "two names"),
    ({"bridge": "ovsbr0", "openvswitch": True}, "Linux bridges only"),
    ({"create_bridge": {"name": "b0", "interface": "eth1"}, "openvswitch": True,
      "anti_spoofing": False}, "makes Linux bridges only"),
])
def test_bridge_option_rules_the_schema_cannot_say(options, message):
    with pytest.raises(Invalid, match=message):
        BridgeMode({"name": "pub", "options": options}).network_xml()


# -- bridge: pure ------------------------------------------------------------------------
def test_bridge_network_interface_and_domain_xml(tmp_path: Path):
    xml = BRIDGE.network_xml()
    assert xml == expected("network-bridge.xml")
    xml_validates(xml, "network", tmp_path)
    iface = BRIDGE.interface(public_nic())
    assert iface.to_xml() == expected("network-bridge-interface.xml")
    dom = domain_with(BRIDGE, public_nic())
    assert dom == expected("network-bridge-domain.xml")
    xml_validates(dom, "domain", tmp_path)


def test_bridge_filter_parameters_cover_every_address_and_no_address():
    two = public_nic(addresses=[Address("203.0.113.10", 24), Address("203.0.113.11", 24),
                                Address("2001:db8::10", 64), Address("2001:db8::11", 64)])
    assert BRIDGE.interface(two).filterref == FilterRef("hvp-clean-traffic", [
        ("MAC", MAC), ("IP", "203.0.113.10"), ("IP", "203.0.113.11"),
        ("IPV6", "2001:db8::10"), ("IPV6", "2001:db8::11")])
    v6_only = public_nic(addresses=[Address("2001:db8::10", 64)])
    assert BRIDGE.interface(v6_only).filterref.params == [
        ("MAC", MAC), ("IP", nwfilter.NO_IPV4), ("IPV6", "2001:db8::10")]
    assert nwfilter.NO_IPV4 == "0.0.0.0"  # noqa: S104 - a filter parameter
    off = BridgeMode({"name": "pub", "options": {"bridge": "br0", "anti_spoofing": False}})
    assert off.interface(public_nic()).filterref is None


def test_bridge_filters_are_valid_nwfilter_xml(tmp_path: Path):
    for _name, xml in nwfilter.FILTERS:
        xml_validates(xml, "nwfilter", tmp_path)
    assert nwfilter.same_filter(nwfilter.FILTER_XML, nwfilter.FILTER_XML.replace(
        "chain='root'>", "chain='root'><uuid>" + UUID + "</uuid>"))
    assert not nwfilter.same_filter(nwfilter.FILTER_XML, nwfilter.IPV6_FILTER_XML)
    binding = binding_xml("vnet7", MAC, BRIDGE.interface(public_nic()).filterref)
    xml_validates(binding, "nwfilterbinding", tmp_path)


def test_bridge_xml_only_vlan_cannot_run_here(tmp_path: Path):
    """VLAN tags: valid XML; not started (no vlan links or Open vSwitch in this kernel)."""
    linux = BridgeMode({"name": "pub", "options": {"bridge": "br0", "vlan": 42}})
    xml_validates(linux.network_xml(), "network", tmp_path)
    dom = domain_with(linux, public_nic())
    tag = ET.fromstring(dom).find("devices/interface/vlan/tag")  # noqa: S314 - ours
    assert tag is not None and tag.get("id") == "42"
    xml_validates(dom, "domain", tmp_path)
    ovs = BridgeMode({"name": "pub", "options": {"bridge": "ovsbr0", "openvswitch": True,
                                                 "anti_spoofing": False, "vlan": 42}})
    assert ovs.network_xml() == expected("network-bridge-ovs.xml")
    xml_validates(ovs.network_xml(), "network", tmp_path)
    assert ovs.interface(public_nic()).to_xml() == expected("network-bridge-ovs-interface.xml")
    xml_validates(domain_with(ovs, public_nic()), "domain", tmp_path)


def test_bridge_guest_config_is_static():
    config = BRIDGE.guest_config(public_nic())
    assert config.netplan() == {
        "match": {"macaddress": MAC}, "set-name": "eth0", "dhcp4": False,
        "addresses": ["203.0.113.10/24", "2001:db8::10/64"],
        "routes": [{"to": "0.0.0.0/0", "via": "203.0.113.1"},
                   {"to": "::/0", "via": "2001:db8::1"}],
        "nameservers": {"addresses": ["203.0.113.53"]}}
    mtu = BridgeMode({"name": "pub", "options": {"bridge": "br0", "mtu": 9000}})
    assert mtu.guest_config(public_nic()).netplan()["mtu"] == 9000
    assert mtu.interface(public_nic()).mtu == 9000


# -- nat: pure ---------------------------------------------------------------------------
def test_nat_network_interface_and_domain_xml(tmp_path: Path):
    xml = NAT.network_xml()
    assert xml == expected("network-nat.xml")
    xml_validates(xml, "network", tmp_path)
    dual = NatMode({"name": "priv", "options": {
        "address": "10.88.0.1", "prefix": 24, "ipv6_address": "2001:db8:88::1",
        "ipv6_prefix": 64, "bridge": "hvpnat0", "mtu": 1450}})
    assert dual.network_xml() == expected("network-nat-ipv6.xml")
    xml_validates(dual.network_xml(), "network", tmp_path)
    dom = domain_with(NAT, nat_nic())
    assert dom == expected("network-nat-domain.xml")
    xml_validates(dom, "domain", tmp_path)



def test_nat_pools_must_lie_inside_its_range():
    dual = NatMode({"name": "priv", "options": {**NAT.options,
                                                "ipv6_address": "2001:db8:88::1"}})
    assert dual.pool_problem(ipaddress.ip_network("10.88.0.0/24")) is None
    assert dual.pool_problem(ipaddress.ip_network("10.88.0.128/25")) is None
    assert dual.pool_problem(ipaddress.ip_network("2001:db8:88::/64")) is None
    assert "outside" in NAT.pool_problem(ipaddress.ip_network("10.89.0.0/24"))
    assert "outside" in NAT.pool_problem(ipaddress.ip_network("10.88.0.0/16"))
    assert "no IPv6 range" in NAT.pool_problem(ipaddress.ip_network("2001:db8:88::/64"))
    assert BRIDGE.pool_problem(ipaddress.ip_network("203.0.113.0/24")) is None


def test_nat_bridge_names_fit_in_fifteen_characters():
    assert NAT.bridge == "hvpn-priv"
    long = NatMode({"name": "a-rather-long-network-name", "options": NAT.options})
    other = NatMode({"name": "a-rather-long-network-name2", "options": NAT.options})
    assert len(long.bridge) == 15 and long.bridge.startswith("hvpn-a-ra-")
    assert long.bridge != other.bridge and long.bridge_mac != other.bridge_mac


@pytest.mark.parametrize("options, message", [
    ({"address": "10.88.0.0", "prefix": 24}, "not a host address"),
    ({"address": "10.88.0.255", "prefix": 24}, "not a host address"),
    ({"address": "10.88.0.1", "prefix": 24, "ipv6_address": "2001:db8:88::"},
     "not a host address"),
    ({"address": "10.88.0.1", "prefix": 24, "ipv6_address": "2001:db8:::1"},
     "not an address"),
])
def test_nat_option_rules_the_schema_cannot_say(options, message):
    with pytest.raises(Invalid, match=message):
        NatMode({"name": "priv", "options": options}).network_xml()


def test_nat_guest_config_dhcp_and_static_with_the_bridge_as_gateway_and_dns():
    config = NAT.guest_config(nat_nic())
    assert config.netplan() == {
        "match": {"macaddress": MAC}, "set-name": "eth0", "dhcp4": True,
        "addresses": ["10.88.0.10/24"], "routes": [{"to": "0.0.0.0/0", "via": "10.88.0.1"}],
        "nameservers": {"addresses": ["10.88.0.1"]}}
    dual = NatMode({"name": "priv", "options": {**NAT.options,
                                                "ipv6_address": "2001:db8:88::1"}})
    nic = nat_nic(addresses=[Address("10.88.0.10", 24), Address("2001:db8:88::10", 64)],
                  dns=["10.88.0.53"])
    assert dual.guest_config(nic).netplan()["routes"] == [
        {"to": "0.0.0.0/0", "via": "10.88.0.1"}, {"to": "::/0", "via": "2001:db8:88::1"}]
    assert dual.guest_config(nic).nameservers == ["10.88.0.53"]
    v6_only = nat_nic(addresses=[Address("2001:db8:88::10", 64)])
    assert dual.guest_config(v6_only).dhcp4 is False  # no IPv4: no DHCP host entry


def test_nat_plan_refuses_host_ports_already_forwarded():
    assert NAT.plan_nic(nat_nic(), {8080}) == nat_nic().options
    with pytest.raises(NetworkError, match="2222/tcp is already forwarded"):
        NAT.plan_nic(nat_nic(), {2222})
    twice = nat_nic(options={"port_forwards": [{"host_port": 80, "guest_port": 80},
                                               {"host_port": 80, "guest_port": 8080}]})
    with pytest.raises(NetworkError) as info:
        NAT.plan_nic(twice, set())
    assert info.value.code == "port_in_use"


SS_TCP = """LISTEN 0 128 0.0.0.0:22 0.0.0.0:*
LISTEN 0 128 127.0.0.1:8080 0.0.0.0:*
LISTEN 0 32 10.88.0.1%hvpn-priv:53 0.0.0.0:*
LISTEN 0 128 [::]:443 [::]:*
LISTEN 0 128 [::1]:631 [::]:*
LISTEN 0 128 *:9100 *:*
"""


@dataclass
class CannedNode:
    """A node whose commands answer from a table (argv prefix -> output)."""

    answers: dict[tuple[str, ...], str]
    node_id: str = "canned"
    name: str = "canned"
    local: bool = False
    demo: bool = False
    conn: object = None

    def run(self, argv: list[str], check: bool = True) -> str:
        return next(out for key, out in self.answers.items() if tuple(argv[:len(key)]) == key)


def test_nat_forwards_never_hide_a_service_of_the_node():
    node = CannedNode({("ss", "-H", "-l", "-n", "-t"): SS_TCP})
    assert portforward._listening(node, "tcp") == {22, 53, 443, 9100}  # not loopback-only
    for port in (22, 53):
        with pytest.raises(NetworkError, match=f"port {port}/tcp is taken by a service"):
            portforward.refuse_node_services(node, [Forward("tcp", 2222, 22),
                                                    Forward("tcp", port, 80)])


# -- user: pure --------------------------------------------------------------------------
def test_user_domain_xml_isolated_with_forwards_on_loopback(tmp_path: Path):
    assert USER.network_xml() is None
    nic = Nic("vm1", "web1", 0, MAC, options={"forwards": [
        {"protocol": "tcp", "guest_port": 22, "host_port": 20022},
        {"protocol": "udp", "guest_port": 53, "host_port": 20053}]})
    assert USER.qemu_args(nic) == [
        "-netdev", "user,id=hvpnet0,restrict=on,hostfwd=tcp:127.0.0.1:20022-:22,"
                   "hostfwd=udp:127.0.0.1:20053-:53",
        "-device", f"virtio-net-pci,netdev=hvpnet0,mac={MAC},bus=pci.0,addr=0x1e"]
    dom = domain_with(USER, nic)
    assert dom == expected("network-user-domain.xml")
    xml_validates(dom, "domain", tmp_path)
    open_mode = UserMode({"name": "local", "options": {"restrict": False}})
    second = Nic("vm1", "web1", 1, "52:54:00:7e:00:11", mtu=1400)
    assert open_mode.qemu_args(second, machine="pc-q35-7.2") == [
        "-netdev", "user,id=hvpnet1,restrict=off",
        "-device", "virtio-net-pci,netdev=hvpnet1,mac=52:54:00:7e:00:11,bus=pcie.0,"
                   "addr=0x1d,host_mtu=1400"]
    with pytest.raises(NetworkError, match="at most 8 user-mode NICs"):
        USER.qemu_args(Nic("vm1", "web1", 8, MAC))
    with pytest.raises(NetworkError, match="cannot be hot-plugged"):
        USER.interface(nic)
    with pytest.raises(NetworkError, match="has no host port"):
        USER.qemu_args(Nic("vm1", "web1", 0, MAC, options={"forwards": [{"guest_port": 22}]}))


def test_user_guest_config_is_qemu_dhcp():
    assert USER.guest_config(Nic("vm1", "web1", 0, MAC)).netplan() == {
        "match": {"macaddress": MAC}, "set-name": "eth0", "dhcp4": True}


def _free_block(size: int) -> int:
    """The start of ``size`` consecutive ports that are free for TCP on 127.0.0.1 now."""
    for start in range(41000, 60000, size):
        if all(ports.can_bind("tcp", p) for p in range(start, start + size)):
            return start
    raise RuntimeError("no free port block")


def test_user_plan_fills_ports_skipping_used_and_unbindable_ones():
    low = _free_block(6)
    mode = UserMode({"name": "local", "options": {"port_range": {"min": low,
                                                                 "max": low + 5}}})
    nic = Nic("vm1", "web1", 0, MAC, options={"forwards": [
        {"guest_port": 22}, {"guest_port": 80, "host_port": low + 2}, {"guest_port": 443}]})
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", low + 1))
        busy.listen()
        planned = mode.plan_nic(nic, ports_in_use={low})
    assert planned == {"forwards": [
        {"guest_port": 22, "protocol": "tcp", "host_port": low + 3},
        {"guest_port": 80, "host_port": low + 2, "protocol": "tcp"},
        {"guest_port": 443, "protocol": "tcp", "host_port": low + 4}]}
    assert nic.options["forwards"][0] == {"guest_port": 22}  # the input is not changed
    with pytest.raises(NetworkError, match="already forwarded"):
        mode.plan_nic(nic, ports_in_use={low + 2})
    with pytest.raises(NetworkError) as info:
        mode.plan_nic(nic, ports_in_use={low, low + 1, low + 3, low + 4, low + 5})
    assert info.value.code == "no_free_port"
    assert mode.plan_nic(Nic("vm1", "web1", 0, MAC), set()) == {}


def test_user_port_range_must_be_ordered():
    mode = UserMode({"name": "local", "options": {"port_range": {"min": 30001,
                                                                 "max": 30000}}})
    with pytest.raises(Invalid, match="above max"):
        mode.plan_nic(Nic("vm1", "web1", 0, MAC, options={"forwards": [{"guest_port": 1}]}),
                      set())


# -- the demo node (libvirt's test driver) ---------------------------------------------
@dataclass
class LocalNode:
    """A NodeContext on this machine: commands run here, argv lists only."""

    conn: libvirt.virConnect
    node_id: str = "hvpm-node"
    name: str = "hvpm-node"
    local: bool = True
    demo: bool = False

    def run(self, argv: list[str], check: bool = True) -> str:
        if self.demo:
            return ""
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode and check:
            raise NodeCommandError(f"node {self.name}: {' '.join(argv[:3])} failed: "
                                   f"{(proc.stderr or proc.stdout).strip()}")
        return proc.stdout


def test_nat_and_bridge_on_the_demo_node(tmp_path: Path):
    copy = tmp_path / "node.xml"
    shutil.copyfile(DATA / "test-node.xml", copy)
    conn = libvirt.open(f"test://{copy}")
    node = LocalNode(conn, demo=True)
    try:
        NAT.prepare(node)
        NAT.prepare(node)
        net = conn.networkLookupByName("hvp-priv")
        assert net.isActive() and net.autostart()
        NAT.attach(node, nat_nic())
        NAT.attach(node, nat_nic())
        assert [(h.get("mac"), h.get("ip")) for h in dhcp.hosts(net)] == [
            (NAT.bridge_mac, "10.88.0.1"), (MAC, "10.88.0.10")]
        NAT.detach(node, nat_nic())
        assert [h.get("ip") for h in dhcp.hosts(net)] == ["10.88.0.1"]
        NAT.cleanup(node)
        BRIDGE.prepare(node)
        assert conn.networkLookupByName("hvp-pub").isActive()
        BRIDGE.cleanup(node)
        assert {n.name() for n in conn.listAllNetworks()} & {"hvp-priv", "hvp-pub"} == set()
    finally:
        conn.close()


# -- real: the host, before and after ------------------------------------------------------
def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check,
                          timeout=60)


def iptables_rules() -> list[str]:
    """``iptables-save`` without counters, comments and libvirt's LIBVIRT_* chains."""
    out = []
    for line in sh("iptables-save").stdout.splitlines():
        if line.startswith("#") or "LIBVIRT_" in line:
            continue
        out.append(line.rsplit(" [", 1)[0] if line.startswith(":") else line)
    return out


def forward_chain() -> list[str]:
    """The FORWARD chain's rules in order, libvirt's jumps included."""
    return [r for r in sh("iptables", "-w", "-S", "FORWARD").stdout.splitlines()
            if r.startswith("-A ")]


def links() -> dict[str, dict]:
    return {link["ifname"]: link for link in json.loads(sh("ip", "-j", "-d", "link").stdout)}


def host_state(conn: libvirt.virConnect) -> dict[str, set[str]]:
    """This module's footprint (other tests share the host and may run meanwhile): names
    with ``hvpm`` (links, namespaces, networks, bindings) and the plugin's nwfilters."""
    netns = {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines()}
    state = {
        "networks": {n.name() for n in conn.listAllNetworks()},
        "nwfilters": {f.name() for f in conn.listAllNWFilters()},
        "bindings": {b.portDev() for b in conn.listAllNWFilterBindings()},
        "links": set(links()),
        "netns": netns,
    }
    filters = {name for name, _xml in nwfilter.FILTERS}
    return {kind: {n for n in names if "hvpm" in n or n in filters}
            for kind, names in state.items()}


@pytest.fixture
def system() -> Iterator[libvirt.virConnect]:
    ensure_libvirtd()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open(SYSTEM_URI)
    yield conn
    conn.close()


@pytest.fixture
def node(system: libvirt.virConnect) -> Iterator[LocalNode]:
    """The local node; after the test, the host has exactly what it had before."""
    before, rules = host_state(system), iptables_rules()
    yield LocalNode(system)
    assert host_state(system) == before
    assert iptables_rules() == rules


@pytest.fixture
def cleanups() -> Iterator[Callable[..., None]]:
    """Register undo steps; they all run (last first) even when one fails."""
    with contextlib.ExitStack() as stack:
        def push(*argv: str) -> None:
            stack.callback(sh, *argv, check=False)
        yield push


def veth(cleanups, host_end: str, ns_end: str, netns: str | None = None) -> None:
    peer = ["netns", netns] if netns else []
    sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end, *peer)
    cleanups("ip", "link", "del", host_end)


def namespace(cleanups, name: str, ifname: str, *addresses: str) -> None:
    """A network namespace whose interface ``ifname`` (already there) has ``addresses``."""
    run = ["ip", "netns", "exec", name]
    sh(*run, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
       "net.ipv6.conf.default.accept_dad=0", f"net.ipv6.conf.{ifname}.accept_dad=0")
    sh("ip", "-n", name, "link", "set", "lo", "up")
    for address in addresses:
        extra = ["nodad"] if ":" in address else []
        sh("ip", "-n", name, "address", "add", address, "dev", ifname, *extra)
    sh("ip", "-n", name, "link", "set", ifname, "up")


def new_netns(cleanups, name: str) -> None:
    sh("ip", "netns", "add", name)
    cleanups("ip", "netns", "del", name)


def bridge(cleanups, name: str) -> None:
    sh("ip", "link", "add", name, "type", "bridge")
    cleanups("ip", "link", "del", name)
    sh("ip", "link", "set", name, "up")


def pings(netns: str, source: str, target: str) -> bool:
    family = ["-6"] if ":" in target else []
    proc = sh("ip", "netns", "exec", netns, "busybox", "ping", *family, "-c", "1", "-W", "2",
              "-I", source, target, check=False)
    return proc.returncode == 0 and "bytes from" in proc.stdout


def dnsmasq_pid(network: str) -> int:
    pid = int(Path(f"/run/libvirt/network/{network}.pid").read_text().strip())
    assert "dnsmasq" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    return pid


def virsh_hosts(network: str) -> list[tuple[str, str]]:
    xml = sh("virsh", "-c", SYSTEM_URI, "net-dumpxml", network).stdout
    return [(h.get("mac"), h.get("ip")) for h in ET.fromstring(xml).iter("host")]  # noqa: S314


# -- real: nat ---------------------------------------------------------------------------
def nat_mode(name: str, third_octet: int) -> NatMode:
    return NatMode({"name": name, "options": {"address": f"10.247.{third_octet}.1",
                                              "prefix": 24}})


@pytest.mark.slow
def test_nat_dhcp_hosts_live_and_port_forward_rules_real(system, node):
    mode = nat_mode("hvpm-nat", 31)
    nic = nat_nic(vm_id="hvpm-vm1", addresses=[Address("10.247.31.10", 24)], options={
        "port_forwards": [{"protocol": "tcp", "host_port": 30022, "guest_port": 22},
                          {"protocol": "udp", "host_port": 30053, "guest_port": 53}]})
    rules_before = iptables_rules()
    try:
        mode.prepare(node)
        mode.prepare(node)  # idempotent
        net = system.networkLookupByName(mode.libvirt_name)
        assert net.isActive() and net.autostart()
        assert "UP" in links()[mode.bridge]["flags"]
        pid = dnsmasq_pid(mode.libvirt_name)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as service:
            service.bind(("10.247.31.1", 30099))  # a service on the node (its bridge)
            service.listen()
            taken = nat_nic(vm_id="hvpm-vm1", addresses=[Address("10.247.31.10", 24)],
                            options={"port_forwards": [{"host_port": 30099,
                                                        "guest_port": 80}]})
            with pytest.raises(NetworkError, match="30099/tcp is taken by a service"):
                mode.attach(node, taken)
        assert iptables_rules() == rules_before  # refused before any change
        assert virsh_hosts(mode.libvirt_name) == [(mode.bridge_mac, "10.247.31.1")]
        # A stale entry for the VM's address (another MAC) is replaced, not an error.
        net.update(dhcp.ADD, dhcp.SECTION, -1, dhcp.host_xml("52:54:00:7e:ff:ff",
                                                             "10.247.31.10"), 3)
        mode.attach(node, nic)
        mode.attach(node, nic)  # again: nothing doubles
        assert virsh_hosts(mode.libvirt_name) == [(mode.bridge_mac, "10.247.31.1"),
                                                  (MAC, "10.247.31.10")]
        hostsfile = Path(f"/var/lib/libvirt/dnsmasq/{mode.libvirt_name}.hostsfile")
        assert f"{MAC},10.247.31.10" in hostsfile.read_text()
        added = [r for r in iptables_rules() if r not in rules_before]
        tag = '"hvp-pf:hvp-hvpm-nat:vm=hvpm-vm1:nic=0"'
        assert sorted(added) == sorted([
            ":HVP_NAT_PF -",
            "-A PREROUTING -m addrtype --dst-type LOCAL -j HVP_NAT_PF",
            "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j HVP_NAT_PF",
            f"-A HVP_NAT_PF -p tcp -m tcp --dport 30022 -m comment --comment {tag} "
            "-j DNAT --to-destination 10.247.31.10:22",
            f"-A HVP_NAT_PF -p udp -m udp --dport 30053 -m comment --comment {tag} "
            "-j DNAT --to-destination 10.247.31.10:53",
            ":HVP_FWD -",
            "-A FORWARD -j HVP_FWD",
            f"-A HVP_FWD -d 10.247.31.10/32 -o {mode.bridge} -p tcp -m tcp --dport 22 -m "
            f"conntrack --ctstate DNAT -m comment --comment {tag} -j ACCEPT",
            f"-A HVP_FWD -d 10.247.31.10/32 -o {mode.bridge} -p udp -m udp --dport 53 -m "
            f"conntrack --ctstate DNAT -m comment --comment {tag} -j ACCEPT"])
        forward = forward_chain()
        assert forward[0] == "-A FORWARD -j HVP_FWD"  # before libvirt's REJECT rules
        assert "-A FORWARD -j LIBVIRT_FWI" in forward
        sh("iptables", "-w", "-D", "FORWARD", "-j", "HVP_FWD")  # as if libvirtd had put
        sh("iptables", "-w", "-A", "FORWARD", "-j", "HVP_FWD")  # its own jumps first
        mode.attach(node, nic)
        forward = forward_chain()
        assert forward[0] == "-A FORWARD -j HVP_FWD" and forward.count(forward[0]) == 1
        mode.detach(node, nic)
        mode.detach(node, nic)  # again: nothing to do
        assert virsh_hosts(mode.libvirt_name) == [(mode.bridge_mac, "10.247.31.1")]
        assert iptables_rules() == rules_before
        assert dnsmasq_pid(mode.libvirt_name) == pid  # never restarted
    finally:
        mode.cleanup(node)
    with pytest.raises(libvirt.libvirtError):
        system.networkLookupByName(mode.libvirt_name)
    assert iptables_rules() == rules_before


@pytest.mark.slow
def test_nat_cleanup_removes_the_networks_forwards_only_real(system, node):
    one, two = nat_mode("hvpm-nat1", 33), nat_mode("hvpm-nat2", 34)
    nic1 = nat_nic(vm_id="hvpm-a", addresses=[Address("10.247.33.10", 24)])
    nic2 = nat_nic(vm_id="hvpm-b", addresses=[Address("10.247.34.10", 24)], options={
        "port_forwards": [{"host_port": 30080, "guest_port": 80}]})
    try:
        for mode, nic in ((one, nic1), (two, nic2)):
            mode.prepare(node)
            mode.attach(node, nic)
        one.cleanup(node)
        rules = "\n".join(iptables_rules())
        assert "hvp-hvpm-nat1" not in rules and "hvp-pf:hvp-hvpm-nat2:vm=hvpm-b" in rules
    finally:
        one.cleanup(node)
        two.cleanup(node)


@pytest.mark.slow
def test_nat_port_forward_reaches_a_listener_on_the_nat_bridge_real(system, node, cleanups):
    """A namespace on the NAT bridge plays the VM; another one, behind a veth, a client."""
    mode = nat_mode("hvpm-natfw", 32)
    nic = nat_nic(vm_id="hvpm-vm2", addresses=[Address("10.247.32.10", 24)], options={
        "port_forwards": [{"protocol": "tcp", "host_port": 30022, "guest_port": 22}]})
    try:
        mode.prepare(node)
        new_netns(cleanups, "hvpm-ng")
        veth(cleanups, "hvpm-ng0", "hvpm-ng1", "hvpm-ng")
        sh("ip", "link", "set", "hvpm-ng0", "master", mode.bridge, "up")
        namespace(cleanups, "hvpm-ng", "hvpm-ng1", "10.247.32.10/24")
        sh("ip", "-n", "hvpm-ng", "route", "add", "default", "via", "10.247.32.1")
        new_netns(cleanups, "hvpm-np")
        veth(cleanups, "hvpm-np0", "hvpm-np1", "hvpm-np")
        sh("ip", "address", "add", "198.51.100.249/30", "dev", "hvpm-np0")
        sh("ip", "link", "set", "hvpm-np0", "up")
        namespace(cleanups, "hvpm-np", "hvpm-np1", "198.51.100.250/30")
        wait_forwarding("hvpm-ng0")
        with listener("hvpm-ng", 22, "hvp-forwarded"):
            client = ["ip", "netns", "exec", "hvpm-np", "busybox", "nc", "-w", "3",
                      "198.51.100.249", "30022"]
            assert "hvp-forwarded" not in sh(*client, check=False).stdout
            mode.attach(node, nic)
            assert sh(*client, check=False).stdout.strip() == "hvp-forwarded"
            local = sh("busybox", "nc", "-w", "3", "10.247.32.1", "30022", check=False)
            assert local.stdout.strip() == "hvp-forwarded"  # from the node itself (OUTPUT)
            mode.detach(node, nic)
            assert "hvp-forwarded" not in sh(*client, check=False).stdout
    finally:
        mode.cleanup(node)


def wait_forwarding(port: str, timeout: float = 15.0) -> None:
    """Wait until a bridge port forwards (with STP on, a new port first listens and
    learns for twice the kernel's minimum forward delay)."""
    state = Path(f"/sys/class/net/{port}/brport/state")
    deadline = time.monotonic() + timeout
    while state.read_text().strip() != "3":  # BR_STATE_FORWARDING
        assert time.monotonic() < deadline, f"{port} does not forward"
        time.sleep(0.1)


@contextlib.contextmanager
def listener(netns: str, port: int, reply: str) -> Iterator[None]:
    """A TCP server in ``netns`` that answers every connection with ``reply``."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "busybox", "nc", "-ll", "-p",
                             str(port), "-e", "busybox", "echo", reply])
    try:
        time.sleep(0.3)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- real: bridge --------------------------------------------------------------------------
@pytest.mark.slow
def test_bridge_network_over_an_existing_bridge_real(system, node, cleanups):
    bridge(cleanups, "hvpm-br0")
    filters_before = {f.name() for f in system.listAllNWFilters()}
    mode = BridgeMode({"name": "hvpm-br", "options": {"bridge": "hvpm-br0"}})
    try:
        mode.prepare(node)
        mode.prepare(node)
        net = system.networkLookupByName("hvp-hvpm-br")
        assert net.isActive() and "<forward mode='bridge'/>" in net.XMLDesc(0)
        assert {"hvp-clean-traffic", "hvp-no-ipv6-spoofing"} <= {
            f.name() for f in system.listAllNWFilters()}
    finally:
        mode.cleanup(node)
    filters = {f.name() for f in system.listAllNWFilters()}
    others = [n for n in system.listAllNetworks() if n.name().startswith("hvp-")
              and "<forward mode='bridge'" in n.XMLDesc(0)]
    if not others:  # the last bridged network of the panel took its filters along
        assert not {"hvp-clean-traffic", "hvp-no-ipv6-spoofing"} & (filters - filters_before)
    remove_filters_made_here(system, filters_before)
    assert "hvpm-br0" in links()  # not the panel's: it stays


@pytest.mark.slow
def test_bridge_network_without_its_host_bridge_fails_clearly_real(system, node, cleanups):
    missing = BridgeMode({"name": "hvpm-nobr", "options": {"bridge": "hvpm-nobr0",
                                                           "anti_spoofing": False}})
    with pytest.raises(NetworkError, match="node hvpm-node: host bridge hvpm-nobr0 does "
                                           "not exist"):
        missing.prepare(node)
    veth(cleanups, "hvpm-v8", "hvpm-v9")
    plain = BridgeMode({"name": "hvpm-nobr", "options": {"bridge": "hvpm-v8",
                                                         "anti_spoofing": False}})
    with pytest.raises(NetworkError, match="hvpm-v8 is not a bridge .it is a veth"):
        plain.prepare(node)
    assert "hvp-hvpm-nobr" not in {n.name() for n in system.listAllNetworks()}


@pytest.mark.slow
def test_bridge_the_panel_makes_over_an_interface_real(system, node, cleanups):
    veth(cleanups, "hvpm-v0", "hvpm-v1")
    mode = BridgeMode({"name": "hvpm-mk", "options": {
        "create_bridge": {"name": "hvpm-br1", "interface": "hvpm-v0"}, "mtu": 1400,
        "anti_spoofing": False}})
    try:
        mode.prepare(node)
        mode.prepare(node)  # idempotent
        found = links()
        assert found["hvpm-br1"]["ifalias"] == "hvp-network:hvp-hvpm-mk"
        assert found["hvpm-br1"]["mtu"] == 1400 and "UP" in found["hvpm-br1"]["flags"]
        assert found["hvpm-v0"]["master"] == "hvpm-br1"
        assert system.networkLookupByName("hvp-hvpm-mk").isActive()
    finally:
        mode.cleanup(node)
    assert "hvpm-br1" not in links() and "master" not in links()["hvpm-v0"]
    # Someone else's bridge of that name is never taken over (nor removed).
    bridge(cleanups, "hvpm-br1")
    with pytest.raises(NetworkError, match="hvpm-br1 already exists and was not made"):
        mode.prepare(node)
    mode.cleanup(node)
    assert "hvpm-br1" in links()
    sh("ip", "link", "del", "hvpm-br1")
    # An interface with addresses is refused: a bridge over it would cut them off.
    sh("ip", "address", "add", "198.51.100.253/30", "dev", "hvpm-v1")
    other = BridgeMode({"name": "hvpm-mk", "options": {
        "create_bridge": {"name": "hvpm-br2", "interface": "hvpm-v1"},
        "anti_spoofing": False}})
    with pytest.raises(NetworkError, match=r"hvpm-v1 has addresses \(198.51.100.253/30\)"):
        other.prepare(node)
    assert "hvpm-br2" not in links()
    assert host_bridge.remove_bridge(node, "hvpm-v1", "hvp-network:hvp-hvpm-mk") is False


def remove_filters_made_here(conn: libvirt.virConnect, before: set[str]) -> None:
    """Undefine the plugin's filters if this test defined them and no other bridged
    network (another test's, meanwhile) may need them."""
    made = {name for name, _xml in nwfilter.FILTERS} - before
    others = [n for n in conn.listAllNetworks() if "hvpm" not in n.name()
              and "<forward mode='bridge'" in n.XMLDesc(0)]
    if made and not others:
        nwfilter.remove_filters(conn)
        assert not made & {f.name() for f in conn.listAllNWFilters()}


def binding_xml(portdev: str, mac: str, ref: FilterRef) -> str:
    """An nwfilter binding, as libvirt makes for a VM's port (here: a veth's)."""
    root = ET.Element("filterbinding")
    owner = ET.SubElement(root, "owner")
    ET.SubElement(owner, "name").text = "hvpm-antispoof"
    ET.SubElement(owner, "uuid").text = UUID
    ET.SubElement(root, "portdev", name=portdev)
    ET.SubElement(root, "mac", address=mac)
    root.append(ref.element())
    return ET.tostring(root, encoding="unicode")


@pytest.mark.slow
def test_anti_spoofing_drops_spoofed_ipv4_and_ipv6_and_passes_the_own_real(
        system, node, cleanups):
    """The filter interface() puts on a NIC, bound to the "guest" namespace's bridge port."""
    if not shutil.which("busybox"):
        pytest.skip("busybox (busybox-static) is not installed")
    filters_before = {f.name() for f in system.listAllNWFilters()}
    bridge(cleanups, "hvpm-br0")
    for ns, port, addresses in (
            ("hvpm-guest", "hvpm-g", ("203.0.113.10/24", "2001:db8::10/64",
                                      "203.0.113.99/32", "2001:db8::99/128")),
            ("hvpm-peer", "hvpm-p", ("203.0.113.1/24", "2001:db8::1/64"))):
        new_netns(cleanups, ns)
        veth(cleanups, f"{port}0", f"{port}1", ns)
        sh("ip", "link", "set", f"{port}0", "master", "hvpm-br0", "up")
        if ns == "hvpm-guest":
            sh("ip", "-n", ns, "link", "set", f"{port}1", "address", MAC)
        namespace(cleanups, ns, f"{port}1", *addresses)
    spoofed = [("203.0.113.99", "203.0.113.1"), ("2001:db8::99", "2001:db8::1")]
    own = [("203.0.113.10", "203.0.113.1"), ("2001:db8::10", "2001:db8::1")]
    # Without the filter the spoofed sources get answers: the test can see a difference.
    assert [pings("hvpm-guest", s, t) for s, t in own + spoofed] == [True] * 4
    ref = BRIDGE.interface(public_nic()).filterref
    try:
        nwfilter.ensure_filters(system, node.name)
        nwfilter.ensure_filters(system, node.name)  # idempotent
        binding = system.nwfilterBindingCreateXML(binding_xml("hvpm-g0", MAC, ref))
        try:
            for netns in ("hvpm-guest", "hvpm-peer"):
                sh("ip", "-n", netns, "neigh", "flush", "all")
            assert [pings("hvpm-guest", s, t) for s, t in own] == [True, True]
            assert [pings("hvpm-guest", s, t) for s, t in spoofed] == [False, False]
        finally:
            binding.delete()
    finally:
        remove_filters_made_here(system, filters_before)


@pytest.mark.slow
def test_changed_filter_definitions_are_updated_in_place_real(system, node):
    filters_before = {f.name() for f in system.listAllNWFilters()}
    try:
        nwfilter.ensure_filters(system, node.name)
        old = system.nwfilterLookupByName(nwfilter.IPV6_FILTER)
        changed = nwfilter.IPV6_FILTER_XML.replace("priority='1000'", "priority='900'")
        system.nwfilterDefineXML(changed.replace(
            "priority='-610'>", f"priority='-610'><uuid>{old.UUIDString()}</uuid>"))
        nwfilter.ensure_filters(system, node.name)
        now = system.nwfilterLookupByName(nwfilter.IPV6_FILTER)
        assert now.UUIDString() == old.UUIDString()
        assert nwfilter.same_filter(now.XMLDesc(0), nwfilter.IPV6_FILTER_XML)
    finally:
        remove_filters_made_here(system, filters_before)



# -- real: user ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_user_mode_forward_listens_on_loopback_only_real(system, node, machine):
    """A diskless TCG domain with the user-mode NIC: libvirt takes the QEMU arguments,
    QEMU listens on the planned port of 127.0.0.1 (not on other addresses), and the
    NIC's PCI slot leaves libvirt's own devices and hot-plugs alone."""
    low = _free_block(4)
    mode = UserMode({"name": "hvpm-user", "options": {"port_range": {"min": low,
                                                                     "max": low + 3}}})
    nic = Nic("hvpm-vm3", "hvpm-user", 0, MAC, options={"forwards": [{"guest_port": 22}]})
    nic.options = mode.plan_nic(nic, set())
    port = nic.options["forwards"][0]["host_port"]
    dom = DomainBuilder(name="hvpm-user", uuid=str(uuid.uuid4()), vm_id="hvpm-vm3",
                        domain_type="qemu", memory_mib=64, vcpus=1, serial_log=False,
                        machine=machine)
    mode.apply(dom, nic)
    domain = system.defineXML(dom.to_xml())
    try:
        domain.create()
        deadline = time.monotonic() + 10
        while ports.can_bind("tcp", port):
            assert time.monotonic() < deadline, "QEMU does not listen on the forward"
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # QEMU accepts (the guest's port 22 is not asked yet)
        assert ports.can_bind("tcp", port, host="127.0.0.2")  # loopback 127.0.0.1 only
        again = mode.plan_nic(Nic("hvpm-vm4", "x", 0, MAC, options={
            "forwards": [{"guest_port": 22}]}), set())
        assert again["forwards"][0]["host_port"] != port
        domain.attachDevice(Interface("user", mac="52:54:00:7e:00:99").to_xml())
        slots = [a.get("slot") for a in ET.fromstring(domain.XMLDesc(0)).iter("address")  # noqa: S314
                 if a.get("type") == "pci" and a.get("bus") == "0x00"]
        assert "0x1e" not in slots
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            domain.destroy()
        domain.undefine()
