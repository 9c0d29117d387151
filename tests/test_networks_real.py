"""Networks end to end on the real libvirtd: real TCG guests get the addresses the panel gave.

* bridged: a libvirt ``bridge`` network over a bridge the test makes; the guest gets a
  public IPv4 and IPv6 address from IP pools (on its kernel command line), a namespace on
  the same bridge pings both, and the anti-spoofing nwfilter binding is on its port;
* NAT: a libvirt NAT network with dnsmasq; the guest asks for an address by DHCP and gets
  the one the panel fixed for its MAC;
* user-mode, isolated (``restrict=on``): a port on 127.0.0.1 reaches the guest's service,
  and the guest cannot reach the host.
Everything the tests make (bridges, namespaces, networks, bindings, rules) is removed.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.support import netns
from tests.support.client import Client
from tests.support.guest import (
    BANNER_PREFIX,
    EGRESS_PREFIX,
    NET_READY_MARKER,
    build_guest_assets,
    reported_addresses,
)
from tests.support.realvirt import REPO_ROOT, ensure_libvirtd, served_panel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    uri = ensure_libvirtd()
    assets = build_guest_assets(REPO_ROOT / ".cache" / "guest")
    tag = uuid.uuid4().hex[:6]
    with served_panel(tmp_path_factory.mktemp("net") / "data", uri) as (panel, admin):
        pool_dir = f"/var/lib/libvirt/images/hvp-net-{tag}"
        storage = admin.post("/api/v1/storages", {"name": f"net-{tag}", "backend": "dir",
                                                  "options": {"path": pool_dir}}).body
        template = admin.post("/api/v1/vm-templates", {"name": f"net-{tag}", "memory_mib": 128,
                                                       "vcpus": 1, "disk_gib": 1}).body
        raw = libvirt.open(uri)
        env = {"admin": admin, "panel": panel, "assets": assets, "tag": tag, "raw": raw,
               "storage": storage, "template": template}
        try:
            yield env
        finally:
            for vm in admin.get("/api/v1/vms").body["items"]:
                admin.request("DELETE", f"/api/v1/vms/{vm['id']}")
            deadline = time.monotonic() + 60
            while admin.get("/api/v1/vms").body["items"] and time.monotonic() < deadline:
                time.sleep(0.3)
            for pool in admin.get("/api/v1/ip-pools").body["items"]:
                admin.request("DELETE", f"/api/v1/ip-pools/{pool['id']}")
            for net in admin.get("/api/v1/networks").body["items"]:
                admin.request("DELETE", f"/api/v1/networks/{net['id']}")
            admin.request("DELETE", f"/api/v1/storages/{storage['id']}")
            raw.close()
            if Path(pool_dir).exists():
                Path(pool_dir).rmdir()


def _guest(real: dict, name: str, cmdline: str = "", **vm) -> dict:
    admin: Client = real["admin"]
    assets = real["assets"]
    task = admin.run("POST", "/api/v1/vms", {
        "name": name, "vm_template": real["template"]["id"], "storage": real["storage"]["id"],
        "boot": {"kernel": str(assets.kernel), "initrd": str(assets.initrd),
                 "cmdline": f"console=ttyS0 quiet {cmdline}".strip()},
        "start": True, **vm}, timeout=180)
    assert task["state"] == "succeeded", task
    return admin.get(f"/api/v1/vms/{task['result']['vm']}").body


def _console_until(admin: Client, vm_id: str, text: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    console = ""
    while time.monotonic() < deadline:
        console = admin.get(f"/api/v1/vms/{vm_id}/console").body["text"]
        if text in console:
            return console
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared on the console:\n{console[-3000:]}")


def _delete(admin: Client, vm: dict) -> None:
    admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/destroy")
    admin.run("DELETE", f"/api/v1/vms/{vm['id']}")


def test_a_bridged_guest_gets_public_ipv4_and_ipv6_and_is_guarded(real: dict):
    admin: Client = real["admin"]
    before = netns.firewall_snapshot()
    with netns.bridge() as br, netns.namespace(
            br, ["203.0.113.1/24", "2001:db8::1/64"]) as peer:
        net = admin.post("/api/v1/networks", {"name": f"pub-{real['tag']}", "mode": "bridge",
                                              "options": {"bridge": br}})
        assert net.status == 201, net
        for version, body in ((4, {"subnet": "203.0.113.0/24", "gateway": "203.0.113.1",
                                   "range": {"start": "203.0.113.10",
                                             "end": "203.0.113.20"}}),
                              (6, {"subnet": "2001:db8::/64", "gateway": "2001:db8::1",
                                   "range": {"start": "2001:db8::10", "end": "2001:db8::20"}})):
            pool = admin.post("/api/v1/ip-pools", {"name": f"pub{version}-{real['tag']}",
                                                   "network": net.body["id"], **body})
            assert pool.status == 201, pool
        vm = _guest(real, f"br-{real['tag']}", network=net.body["id"])
        assert vm["addresses"] == ["203.0.113.10", "2001:db8::10"]
        console = _console_until(admin, vm["id"], NET_READY_MARKER)
        assert reported_addresses(console)["eth0"] == ["203.0.113.10/24", "2001:db8::10/64"]
        assert netns.ping(peer.name, "203.0.113.10", count=2)
        assert netns.ping(peer.name, "2001:db8::10", count=2)
        bindings = [b for b in real["raw"].listAllNWFilterBindings()
                    if vm["interfaces"][0]["mac"] in b.XMLDesc()]
        assert len(bindings) == 1, "the guest's port has no anti-spoofing binding"
        assert "203.0.113.10" in bindings[0].XMLDesc()
        _delete(admin, vm)
        assert not [b for b in real["raw"].listAllNWFilterBindings()
                    if vm["interfaces"][0]["mac"] in b.XMLDesc()]
        for pool in admin.get("/api/v1/ip-pools").body["items"]:
            assert admin.delete(f"/api/v1/ip-pools/{pool['id']}").status == 204
        assert admin.delete(f"/api/v1/networks/{net.body['id']}").status == 204
    mine = [br, peer.name, peer.veth, f"hvp-pub-{real['tag']}", vm["interfaces"][0]["mac"]]
    assert netns.filter_snapshot(netns.firewall_snapshot(), mine) == \
        netns.filter_snapshot(before, mine)


def test_a_nat_guest_gets_its_fixed_address_from_dnsmasq(real: dict):
    admin: Client = real["admin"]
    net = admin.post("/api/v1/networks", {"name": f"nat-{real['tag']}", "mode": "nat",
                                          "options": {"address": "10.88.7.1", "prefix": 24}})
    assert net.status == 201, net
    pool = admin.post("/api/v1/ip-pools", {"name": f"nat-{real['tag']}",
                                           "network": net.body["id"], "subnet": "10.88.7.0/24",
                                           "gateway": "10.88.7.1",
                                           "range": {"start": "10.88.7.50", "end": "10.88.7.60"}})
    assert pool.status == 201, pool
    libvirt_net = real["raw"].networkLookupByName(f"hvp-nat-{real['tag']}")
    assert libvirt_net.isActive()
    vm = _guest(real, f"nat-{real['tag']}", network=net.body["id"])
    mac, address = vm["interfaces"][0]["mac"], vm["addresses"][0]
    assert address == "10.88.7.50"
    assert f"mac='{mac}'" in libvirt_net.XMLDesc().replace('"', "'")  # a DHCP host entry
    # The guest was told to ask by DHCP and was given no IPv4 address itself ...
    cmdline = real["raw"].lookupByName(vm["name"]).XMLDesc()
    assert f"hvp.net=eth0,{mac},dhcp" in cmdline and "hvp.addr=eth0,10.88" not in cmdline
    console = _console_until(admin, vm["id"], NET_READY_MARKER)
    assert reported_addresses(console)["eth0"][0] == "10.88.7.50/24"
    leases = libvirt_net.DHCPLeases()  # ... and dnsmasq handed it the fixed address
    assert any(lease["mac"] == mac and lease["ipaddr"] == "10.88.7.50" for lease in leases)
    _delete(admin, vm)
    assert f"mac='{mac}'" not in libvirt_net.XMLDesc().replace('"', "'")
    assert admin.delete(f"/api/v1/ip-pools/{pool.body['id']}").status == 204
    assert admin.delete(f"/api/v1/networks/{net.body['id']}").status == 204


def test_an_isolated_user_mode_guest_is_reached_only_through_its_forward(real: dict):
    admin: Client = real["admin"]
    net = admin.post("/api/v1/networks", {"name": f"usr-{real['tag']}", "mode": "user"})
    assert net.status == 201, net
    with socket.socket() as listener:  # the guest must NOT reach this
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.1)
        port = listener.getsockname()[1]
        vm = _guest(real, f"usr-{real['tag']}", cmdline=f"hvp.serve=2222 "
                    f"hvp.probe=10.0.2.2:{port}",
                    interfaces=[{"network": net.body["id"],
                                 "options": {"forwards": [{"protocol": "tcp",
                                                           "guest_port": 2222}]}}])
        forward = vm["interfaces"][0]["options"]["forwards"][0]
        assert forward["host_port"] > 0
        console = _console_until(admin, vm["id"], f"{EGRESS_PREFIX} ")
        assert f"{EGRESS_PREFIX} blocked" in console
        with pytest.raises(TimeoutError):
            listener.accept()
    deadline = time.monotonic() + 30
    banner = ""
    while BANNER_PREFIX not in banner and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", forward["host_port"]), 3) as sock:
                sock.settimeout(3)
                banner = sock.recv(200).decode(errors="replace")
        except OSError:
            time.sleep(0.3)
    assert BANNER_PREFIX in banner
    _delete(admin, vm)
    assert admin.delete(f"/api/v1/networks/{net.body['id']}").status == 204
