"""The test guest's /init configures its network from ``hvp.*`` kernel cmdline tokens.

Real TCG guests on qemu:///system, booted from hand-written domain XML (no panel):
(a) static IPv4 + IPv6 on a test bridge, pinged from a namespace on that bridge; (b) DHCP
from QEMU's user-mode network with ``restrict=on``: the forwarded port reaches the guest's
banner service, the guest's own connection to the host is blocked.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import libvirt
import pytest

from tests.support.guest import (
    BANNER_PREFIX,
    EGRESS_PREFIX,
    GUEST_HOSTNAME,
    MARKER,
    NET_ERROR_PREFIX,
    NET_READY_MARKER,
    GuestAssets,
    build_guest_assets,
    reported_addresses,
)
from tests.support.netns import (
    Snapshot,
    bridge,
    filter_snapshot,
    firewall_snapshot,
    namespace,
    ping,
    snapshot_diff,
    unique_name,
)
from tests.support.realvirt import REPO_ROOT, ensure_libvirtd, wait_for_serial

pytestmark = pytest.mark.slow

SERIAL_LOG_DIR = Path("/var/log/libvirt/qemu")
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
BOOT_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open(ensure_libvirtd())
    yield c
    c.close()


@pytest.fixture(scope="module")
def assets() -> GuestAssets:
    return build_guest_assets(REPO_ROOT / ".cache" / "guest")


def random_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def domain_xml(name: str, assets: GuestAssets, cmdline: str, log: Path, nic: str = "",
               qemu_args: tuple[str, ...] = ()) -> str:
    """A 128 MiB direct-kernel-boot TCG guest with a pty serial console logged to ``log``."""
    extra = ""
    if qemu_args:
        args = "".join(f"<qemu:arg value={quoteattr(a)}/>" for a in qemu_args)
        extra = f"<qemu:commandline>{args}</qemu:commandline>"
    return f"""<domain type='qemu' xmlns:qemu='{QEMU_NS}'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>{escape(str(assets.kernel))}</kernel>
    <initrd>{escape(str(assets.initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    {nic}
    <serial type='pty'><log file={quoteattr(str(log))} append='off'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
  {extra}
</domain>"""


def serial_log(name: str) -> Path:
    return SERIAL_LOG_DIR / f"{name}-serial.log"


@contextmanager
def transient_guest(conn: libvirt.virConnect, xml: str,
                    log: Path) -> Iterator[tuple[libvirt.virDomain, float]]:
    """Create a transient domain; yields (domain, start time).

    Afterwards the domain is destroyed (gone if it powered off itself) and both its serial
    ``log`` and libvirt's ``<name>.log`` are removed.
    """
    dom = None
    try:
        started = time.monotonic()
        dom = conn.createXML(xml, 0)
        yield dom, started
    finally:
        if dom is not None:
            try:
                dom.destroy()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
            (SERIAL_LOG_DIR / f"{dom.name()}.log").unlink(missing_ok=True)
        log.unlink(missing_ok=True)


def wait_ready(log: Path, started: float) -> tuple[str, float]:
    """Serial log content once ``HVP-NET-READY`` is there, and the seconds since start."""
    text = wait_for_serial(log, NET_READY_MARKER, timeout=BOOT_TIMEOUT)
    return text, time.monotonic() - started


def tap_devices(dom: libvirt.virDomain) -> list[str]:
    return re.findall(r"<target dev='([^']+)'", dom.XMLDesc(0))


def assert_nothing_left(before: Snapshot, names: list[str]) -> None:
    """None of this test's devices remain in links, netns, rules or nwfilter bindings."""
    after = firewall_snapshot()
    mine_after = filter_snapshot(after, names)
    assert mine_after == filter_snapshot(before, names), mine_after
    assert not {n for n in names if n in after["links"] or n in after["namespaces"]}
    others = snapshot_diff(before, after)
    if others:  # other tests share this machine's firewall; report, don't fail
        print(f"firewall changed meanwhile (not by this test): {others}")


def test_static_guest_on_a_bridge_answers_ping_over_ipv4_and_ipv6(
        conn: libvirt.virConnect, assets: GuestAssets):
    before = firewall_snapshot()
    name, mac = unique_name("ga"), random_mac()
    names = [name]
    cmdline = (f"console=ttyS0 quiet hvp.net=eth0,{mac},static hvp.addr=eth0,203.0.113.10/24 "
               f"hvp.addr=eth0,2001:db8::10/64 hvp.gw=eth0,203.0.113.1")
    with bridge() as br, namespace(br, ["203.0.113.1/24", "2001:db8::1/64"]) as ns:
        names += [br, ns.name, ns.veth]
        nic = (f"<interface type='bridge'><source bridge='{br}'/><mac address='{mac}'/>"
               f"<model type='virtio'/></interface>")
        log = serial_log(name)
        xml = domain_xml(name, assets, cmdline, log, nic)
        with transient_guest(conn, xml, log) as (dom, started):
            names += tap_devices(dom)
            text, ready = wait_ready(log, started)
            print(f"static guest: HVP-NET-READY {ready:.1f} s after create")
            assert NET_ERROR_PREFIX not in text, text
            assert sorted(reported_addresses(text)["eth0"]) == ["2001:db8::10/64",
                                                               "203.0.113.10/24"]
            text = wait_for_serial(log, MARKER, timeout=30)
            assert text.index(NET_READY_MARKER) < text.index(MARKER)
            deadline = time.monotonic() + 20
            while not (ok4 := ping(ns.name, "203.0.113.10")) and time.monotonic() < deadline:
                time.sleep(0.3)
            assert ok4, "no IPv4 echo reply from the guest"
            while not (ok6 := ping(ns.name, "2001:db8::10")) and time.monotonic() < deadline:
                time.sleep(0.3)
            assert ok6, "no IPv6 echo reply from the guest"
            assert not ping(ns.name, "203.0.113.11")  # a reply needs the configured address
    assert_nothing_left(before, names)


def read_banner(port: int, timeout: float) -> str:
    """First line from 127.0.0.1:``port``, retried until it is a banner (the forward
    accepts connections before the guest listens, then closes them)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    data += chunk
            last = data.decode(errors="replace").strip()
            if last.startswith(BANNER_PREFIX):
                return last
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise AssertionError(f"no {BANNER_PREFIX} line on 127.0.0.1:{port}; last: {last!r}")


def test_restricted_user_network_guest_gets_dhcp_serves_forward_and_cannot_egress(
        conn: libvirt.virConnect, assets: GuestAssets):
    before = firewall_snapshot()
    name, mac, fwd = unique_name("gb"), random_mac(), free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        probe = listener.getsockname()[1]
        cmdline = (f"console=ttyS0 quiet hvp.net=eth0,{mac},dhcp hvp.serve=2222 "
                   f"hvp.probe=10.0.2.2:{probe}")
        args = ("-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{fwd}-:2222",
                "-device", f"virtio-net-pci,netdev=n0,mac={mac}")
        log = serial_log(name)
        xml = domain_xml(name, assets, cmdline, log, qemu_args=args)
        with transient_guest(conn, xml, log) as (_dom, started):
            text, ready = wait_ready(log, started)
            print(f"dhcp guest: HVP-NET-READY {ready:.1f} s after create")
            assert NET_ERROR_PREFIX not in text, text
            v4 = [a for a in reported_addresses(text)["eth0"] if ":" not in a]
            assert v4 == ["10.0.2.15/24"]
            t0 = time.monotonic()
            assert read_banner(fwd, timeout=30) == f"{BANNER_PREFIX} {GUEST_HOSTNAME}"
            print(f"dhcp guest: banner via hostfwd {time.monotonic() - t0:.1f} s after ready")
            text = wait_for_serial(log, f"{EGRESS_PREFIX} ", timeout=30)
            assert f"{EGRESS_PREFIX} blocked 10.0.2.2:{probe}" in text
            assert f"{EGRESS_PREFIX} open" not in text
            with pytest.raises(BlockingIOError):
                listener.accept()  # the guest's connection never reached the host
            wait_for_serial(log, MARKER, timeout=30)
    assert_nothing_left(before, [name])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for bridges and namespaces")
def test_netns_helpers_clean_up_even_when_a_step_fails():
    br, ns = unique_name("b"), unique_name("n")
    with pytest.raises(RuntimeError, match="not-an-address"), bridge(br):
        assert br in firewall_snapshot()["links"]
        with namespace(br, ["198.51.100.2/24", "not-an-address"], name=ns):
            pass
    after = firewall_snapshot()
    assert br not in after["links"] and ns not in after["namespaces"]


@contextmanager
def isolated_network(conn: libvirt.virConnect, host_mac: str,
                     host_ip: str) -> Iterator[tuple[str, str]]:
    """A transient isolated libvirt network (10.213.x/24) whose dnsmasq gives ``host_mac``
    the fixed ``host_ip``; yields (network name, bridge name)."""
    name, br = unique_name("lv"), unique_name("b")
    subnet = host_ip.rsplit(".", 1)[0]
    net = conn.networkCreateXML(f"""<network><name>{name}</name><bridge name='{br}'/>
  <ip address='{subnet}.1' prefix='24'><dhcp><range start='{subnet}.100' end='{subnet}.150'/>
  <host mac='{host_mac}' ip='{host_ip}'/></dhcp></ip></network>""")
    try:
        yield name, br
    finally:
        net.destroy()


def test_dhcp_guest_gets_its_fixed_address_from_libvirts_dnsmasq(
        conn: libvirt.virConnect, assets: GuestAssets):
    before = firewall_snapshot()
    name, mac = unique_name("gc"), random_mac()
    fixed = f"10.213.{secrets.randbelow(200) + 20}.50"
    names = [name]
    with isolated_network(conn, mac, fixed) as (net, br):
        names += [net, br]
        assert filter_snapshot(firewall_snapshot(), [br])["iptables-save filter"]  # rules exist
        nic = (f"<interface type='network'><source network='{net}'/><mac address='{mac}'/>"
               f"<model type='virtio'/></interface>")
        log = serial_log(name)
        cmdline = f"console=ttyS0 quiet hvp.net=eth0,{mac},dhcp"
        with transient_guest(conn, domain_xml(name, assets, cmdline, log, nic), log) as (
                dom, started):
            names += tap_devices(dom)
            text, ready = wait_ready(log, started)
            print(f"libvirt dhcp guest: HVP-NET-READY {ready:.1f} s after create")
            assert NET_ERROR_PREFIX not in text, text
            assert reported_addresses(text)["eth0"] == [f"{fixed}/24"]
    assert_nothing_left(before, names)
