"""Networks, IP pools and VM interfaces through the API, on the libvirt test driver.

A test-only mode (tests/support/netmode.py) makes isolated networks, so these tests cover
the core (definition on every node, pools, allocation, interfaces); the built-in modes are
tested for real in test_network_modes.py and test_networks_real.py.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor_panel.panel import Panel
from hypervisor_panel.plugins import get_plugin_manager
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.server import serve_in_thread
from tests.conftest import ADMIN_PASSWORD, DATA
from tests.support.api import assert_error
from tests.support.client import Client
from tests.support.netmode import TestModes


def _panel(data: Path, node_xml: Path) -> Panel:
    panel = Panel(data, pm=get_plugin_manager(extra=[TestModes()]),
                  local_uri=f"test://{node_xml}", default_storage_path=str(data / "images"))
    panel.start(admin_password=ADMIN_PASSWORD)
    return panel


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict]:
    node_xml = tmp_path / "node.xml"
    shutil.copyfile(DATA / "test-node.xml", node_xml)
    panel = _panel(tmp_path / "data", node_xml)
    server, port = serve_in_thread(create_app(panel))
    admin = Client(f"http://127.0.0.1:{port}").login("admin", ADMIN_PASSWORD)
    tiny = admin.post("/api/v1/vm-templates", {"name": "tiny", "memory_mib": 16,
                                               "vcpus": 1, "disk_gib": 1}).body
    net = admin.post("/api/v1/networks", {"name": "pub", "mode": "isolated-test"})
    assert net.status == 201, net
    v4 = admin.post("/api/v1/ip-pools", {
        "name": "pub4", "network": net.body["id"], "subnet": "203.0.113.0/24",
        "gateway": "203.0.113.1", "range": {"start": "203.0.113.10", "end": "203.0.113.49"},
        "dns": ["203.0.113.53"]})
    assert v4.status == 201, v4
    v6 = admin.post("/api/v1/ip-pools", {"name": "pub6", "network": net.body["id"],
                                         "subnet": "2001:db8::/64", "gateway": "2001:db8::1"})
    assert v6.status == 201, v6
    try:
        yield {"panel": panel, "admin": admin, "port": port, "tiny": tiny, "net": net.body,
               "v4": v4.body, "v6": v6.body, "tmp": tmp_path, "node_xml": node_xml}
    finally:
        server.stop()
        panel.close()


def _usage(admin: Client, pool: dict) -> dict:
    return admin.get(f"/api/v1/ip-pools/{pool['id']}").body["usage"]


def _vm(env: dict, name: str, **extra) -> dict:
    task = env["admin"].run("POST", "/api/v1/vms", {"name": name,
                                                    "vm_template": env["tiny"]["id"], **extra})
    assert task["state"] == "succeeded", task
    return env["admin"].get(f"/api/v1/vms/{task['result']['vm']}").body


def test_a_network_is_defined_on_every_node_and_refused_twice(env: dict):
    admin, panel = env["admin"], env["panel"]
    node = admin.get("/api/v1/nodes").body["items"][0]
    assert env["net"]["nodes"] == {node["id"]: {"state": "active", "error": None}}
    assert panel.nodes.connection(node["id"]).get().networkLookupByName("hvp-pub").isActive()
    assert_error(admin.post("/api/v1/networks", {"name": "pub", "mode": "isolated-test"}),
                 409, "already_exists")
    assert_error(admin.post("/api/v1/networks", {"name": "x", "mode": "nope"}), 422)
    assert_error(admin.post("/api/v1/networks", {"name": "x", "mode": "isolated-test",
                                                 "options": {"mtu": 1}}), 422)
    assert_error(admin.post("/api/v1/networks", {"name": "a/b", "mode": "isolated-test"}),
                 422)
    modes = {m["name"] for m in admin.get("/api/v1/network-modes").body["items"]}
    assert {"isolated-test", "nopool-test"} <= modes


def test_a_vm_on_a_network_gets_ipv4_and_ipv6_addresses_and_gives_them_back(env: dict):
    admin = env["admin"]
    vm = _vm(env, "web1", network=env["net"]["id"])
    [nic] = vm["interfaces"]
    assert nic["mac"].startswith("52:54:00:") and int(nic["mac"][:2], 16) & 2  # local bit
    assert [a["address"] for a in nic["addresses"]] == ["203.0.113.10", "2001:db8::2"]
    assert nic["addresses"][0] == {"address": "203.0.113.10", "prefix": 24,
                                   "gateway": "203.0.113.1", "pool": env["v4"]["id"]}
    assert nic["dns"] == ["203.0.113.53"]
    listed = next(v for v in admin.get("/api/v1/vms").body["items"] if v["id"] == vm["id"])
    assert listed["addresses"] == ["203.0.113.10", "2001:db8::2"]
    xml = env["panel"].nodes.connection(vm["node"]).get().lookupByName("web1").XMLDesc()
    assert nic["mac"] in xml and "hvp-pub" in xml
    config = admin.get(f"/api/v1/vms/{vm['id']}/network-config").body
    assert config["ethernets"]["eth0"]["addresses"] == ["203.0.113.10/24", "2001:db8::2/64"]
    assert {"to": "0.0.0.0/0", "via": "203.0.113.1"} in config["ethernets"]["eth0"]["routes"]
    assert _usage(admin, env["v4"])["in_use"] == 1
    admin.run("DELETE", f"/api/v1/vms/{vm['id']}")
    assert _usage(admin, env["v4"])["in_use"] == 0 and _usage(admin, env["v6"])["in_use"] == 0


def test_pool_definitions_that_make_no_sense_are_refused_and_change_nothing(env: dict):
    admin, net = env["admin"], env["net"]
    nopool = admin.post("/api/v1/networks", {"name": "np", "mode": "nopool-test"}).body
    before = admin.get("/api/v1/ip-pools").body["items"]
    base = {"name": "bad", "network": net["id"]}
    for body, status, code in [
        ({**base, "subnet": "203.0.113.0/26"}, 409, "pool_overlap"),  # .1-.62 meets .10-.49
        ({**base, "subnet": "198.51.100.0/24", "gateway": "203.0.113.1"}, 422, "invalid_pool"),
        ({**base, "subnet": "198.51.100.7/24"}, 422, "invalid_pool"),
        ({**base, "subnet": "not-a-cidr"}, 422, None),
        ({**base, "subnet": "198.51.100.0/24",
          "range": {"start": "198.51.100.20", "end": "198.51.100.10"}}, 422, "invalid_pool"),
        ({**base, "subnet": "198.51.100.0/24", "reserved": ["203.0.113.5"]}, 422,
         "address_outside_pool"),
        ({**base, "network": "missing", "subnet": "198.51.100.0/24"}, 422,
         "network_not_found"),
        ({**base, "network": nopool["id"], "subnet": "198.51.100.0/24"}, 422,
         "pools_not_used"),
        ({**base, "name": "pub4", "subnet": "198.51.100.0/24"}, 409, "already_exists"),
    ]:
        assert_error(admin.post("/api/v1/ip-pools", body), status, code)
    assert admin.get("/api/v1/ip-pools").body["items"] == before


def test_addresses_in_use_outside_or_exhausted_are_clear_errors(env: dict):
    admin, net = env["admin"], env["net"]
    first = _vm(env, "one", network=net["id"], ip="203.0.113.20")
    assert first["addresses"][0] == "203.0.113.20"
    vms_before = admin.get("/api/v1/vms").body["items"]
    tasks_before = admin.get("/api/v1/tasks").body["items"]
    base = {"name": "two", "vm_template": env["tiny"]["id"], "network": net["id"]}
    assert_error(admin.post("/api/v1/vms", {**base, "ip": "203.0.113.20"}), 409,
                 "address_in_use")
    assert_error(admin.post("/api/v1/vms", {**base, "ip": "203.0.113.200"}), 422,
                 "address_outside_pool")
    assert_error(admin.post("/api/v1/vms", {**base, "ip": "198.51.100.1"}), 422,
                 "address_outside_pool")
    assert_error(admin.post("/api/v1/vms", {**base, "ip": "203.0.113.1"}), 422,
                 "address_outside_pool")  # the gateway
    assert_error(admin.post("/api/v1/vms", {**base, "network": "missing"}), 422,
                 "network_not_found")
    assert admin.get("/api/v1/vms").body["items"] == vms_before
    assert admin.get("/api/v1/tasks").body["items"] == tasks_before
    assert _usage(admin, env["v4"])["in_use"] == 1 and _usage(admin, env["v6"])["in_use"] == 1
    assert_error(admin.delete(f"/api/v1/ip-pools/{env['v4']['id']}"), 409, "pool_in_use")
    assert_error(admin.delete(f"/api/v1/networks/{net['id']}"), 409, "network_in_use")


def test_fifty_concurrent_creates_from_forty_addresses(env: dict):
    admin, net = env["admin"], env["net"]
    clients = [Client(admin.base, token=admin.token) for _ in range(50)]
    answers: list = [None] * 50
    barrier = threading.Barrier(50)

    def create(n: int) -> None:
        barrier.wait()
        answers[n] = clients[n].post("/api/v1/vms", {"name": f"c{n:02d}", "network": net["id"],
                                                     "vm_template": env["tiny"]["id"]})

    threads = [threading.Thread(target=create, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    codes = sorted(a.status for a in answers)
    assert codes.count(202) == 40 and codes.count(409) == 10, codes
    assert {a.body["error"]["code"] for a in answers if a.status == 409} == {"pool_exhausted"}
    for answer in answers:
        if answer.status == 202:
            assert admin.wait_task(answer.body["task"]["id"])["state"] == "succeeded"
    vms = admin.get("/api/v1/vms").body["items"]
    v4 = [a for v in vms for a in v["addresses"] if ":" not in a]
    assert len(vms) == 40 and len(v4) == 40 and len(set(v4)) == 40
    assert len({nic["mac"] for v in vms for nic in v["interfaces"]}) == 40
    assert _usage(admin, env["v4"]) == {"size": 40, "in_use": 40, "reserved": 0, "free": 0}
    for vm in vms:
        admin.delete(f"/api/v1/vms/{vm['id']}")
    deadline = time.monotonic() + 60
    while admin.get("/api/v1/vms").body["items"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _usage(admin, env["v4"]) == {"size": 40, "in_use": 0, "reserved": 0, "free": 40}


def test_allocations_survive_a_restart_and_are_never_handed_out_twice(env: dict):
    _vm(env, "kept", network=env["net"]["id"])
    env["panel"].close()
    panel = _panel(env["tmp"] / "data", env["node_xml"])
    try:
        server, port = serve_in_thread(create_app(panel))
        again = Client(f"http://127.0.0.1:{port}").login("admin", ADMIN_PASSWORD)
        task = again.run("POST", "/api/v1/vms", {"name": "next", "network": env["net"]["id"],
                                                 "vm_template": env["tiny"]["id"]})
        vm = again.get(f"/api/v1/vms/{task['result']['vm']}").body
        assert vm["addresses"][0] == "203.0.113.11"  # .10 is still held by "kept"
        server.stop()
    finally:
        panel.close()
        env["panel"] = _panel(env["tmp"] / "data2", env["node_xml"])  # the fixture closes it


def test_interfaces_and_addresses_can_be_added_and_removed(env: dict):
    admin, net = env["admin"], env["net"]
    vm = _vm(env, "nics")
    assert vm["interfaces"] == [] and vm["addresses"] == []
    added = admin.post(f"/api/v1/vms/{vm['id']}/interfaces", {"network": net["id"]})
    assert added.status == 201, added
    nic = added.body
    xml = env["panel"].nodes.connection(vm["node"]).get().lookupByName("nics").XMLDesc()
    assert nic["mac"] in xml
    more = admin.post(f"/api/v1/vms/{vm['id']}/interfaces/{nic['id']}/addresses",
                      {"ip": "203.0.113.33"})
    assert more.status == 201 and "203.0.113.33" in [a["address"] for a in more.body["addresses"]]
    assert admin.delete(f"/api/v1/vms/{vm['id']}/interfaces/{nic['id']}/addresses/"
                        "203.0.113.33").status == 204
    assert_error(admin.delete(f"/api/v1/vms/{vm['id']}/interfaces/{nic['id']}/addresses/"
                              "203.0.113.33"), 404, "address_not_found")
    assert admin.delete(f"/api/v1/vms/{vm['id']}/interfaces/{nic['id']}").status == 204
    assert admin.get(f"/api/v1/vms/{vm['id']}").body["interfaces"] == []
    xml = env["panel"].nodes.connection(vm["node"]).get().lookupByName("nics").XMLDesc()
    assert nic["mac"] not in xml
    assert _usage(admin, env["v4"])["in_use"] == 0


def test_reservations_hold_addresses_back(env: dict):
    admin, pool = env["admin"], env["v4"]
    held = admin.post(f"/api/v1/ip-pools/{pool['id']}/reservations",
                      {"address": "203.0.113.10", "note": "router"})
    assert held.status == 201 and held.body["kind"] == "reserved"
    assert_error(admin.post(f"/api/v1/ip-pools/{pool['id']}/reservations",
                            {"address": "203.0.113.10"}), 409, "address_in_use")
    vm = _vm(env, "after", network=env["net"]["id"])
    assert vm["addresses"][0] == "203.0.113.11"
    assert admin.delete(f"/api/v1/ip-pools/{pool['id']}/reservations/203.0.113.10"
                        ).status == 204
    assert _usage(admin, pool)["reserved"] == 0


def test_users_cannot_choose_addresses_or_manage_pools(env: dict):
    admin = env["admin"]
    admin.post("/api/v1/users", {"name": "bob", "password": "bob-password-1"})
    bob = Client(admin.base).login("bob", "bob-password-1")
    assert_error(bob.get("/api/v1/ip-pools"), 403, "admin_only")
    assert_error(bob.post("/api/v1/networks", {"name": "n", "mode": "isolated-test"}), 403)
    assert_error(bob.post("/api/v1/vms", {"name": "b1", "vm_template": env["tiny"]["id"],
                                          "network": env["net"]["id"], "ip": "203.0.113.40"}),
                 403, "admin_only")
    task = bob.run("POST", "/api/v1/vms", {"name": "b2", "vm_template": env["tiny"]["id"],
                                           "network": env["net"]["id"]})
    assert task["state"] == "succeeded"
    assert [n["name"] for n in bob.get("/api/v1/networks").body["items"]] == ["pub"]
    assert "nodes" not in bob.get("/api/v1/networks").body["items"][0]


def test_a_node_that_joins_later_gets_the_network(env: dict):
    panel = env["panel"]
    copy = env["tmp"] / "late.xml"
    shutil.copyfile(DATA / "test-node.xml", copy)
    panel.nodes.add({"id": "late", "name": "late", "uri": f"test://{copy}", "kind": "demo",
                     "host": "127.0.0.1", "domain_type": "auto", "created": time.time()})
    net = env["admin"].get(f"/api/v1/networks/{env['net']['id']}").body
    assert net["nodes"]["late"] == {"state": "active", "error": None}
    assert panel.nodes.connection("late").get().networkLookupByName("hvp-pub").isActive()


def test_a_node_where_the_network_cannot_run_shows_why(env: dict):
    admin, panel = env["admin"], env["panel"]
    net = admin.post("/api/v1/networks", {"name": "picky", "mode": "isolated-test",
                                          "options": {"missing_on": "late2"}}).body
    copy = env["tmp"] / "late2.xml"
    shutil.copyfile(DATA / "test-node.xml", copy)
    panel.nodes.add({"id": "late2", "name": "late2", "uri": f"test://{copy}", "kind": "demo",
                     "host": "127.0.0.1", "domain_type": "auto", "created": time.time()})
    state = admin.get(f"/api/v1/networks/{net['id']}").body["nodes"]["late2"]
    assert state["state"] == "error" and "hvpt-test does not exist" in state["error"]
    refused = admin.post("/api/v1/vms", {"name": "there", "vm_template": env["tiny"]["id"],
                                         "node": "late2", "network": net["id"]})
    assert_error(refused, 503, "network_unavailable")
    assert admin.post("/api/v1/ip-pools", {"name": "picky4", "network": net["id"],
                                           "subnet": "198.51.100.0/24"}).status == 201
    here = _vm(env, "here", network=net["id"])  # on the first node, where it runs
    check = admin.get(f"/api/v1/vms/{here['id']}/migration-check?node=late2").body
    assert "network 'picky' is not active on node 'late2'" in check["problems"]
    # Creating a network that cannot run on an online node creates nothing at all.
    assert_error(admin.post("/api/v1/networks", {"name": "nowhere", "mode": "isolated-test",
                                                 "options": {"missing_on": "late2"}}), 422,
                 "network_error")
    assert "nowhere" not in [n["name"] for n in admin.get("/api/v1/networks").body["items"]]
    assert "hvp-nowhere" not in panel.nodes.connection(
        admin.get("/api/v1/nodes").body["items"][0]["id"]).get().listNetworks()
