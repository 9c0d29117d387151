"""Cluster logic on two test-driver nodes: placement, overcommit, migration pre-flight, node API."""

from __future__ import annotations

from tests.support.client import Client


def node_ids(admin: Client) -> dict[str, str]:
    return {n["name"]: n["id"] for n in admin.get("/api/v1/nodes").body["items"]}


def template(admin: Client, memory: int) -> str:
    resp = admin.post("/api/v1/vm-templates", {"name": f"m{memory}", "memory_mib": memory,
                                               "vcpus": 1, "disk_gib": 1})
    return resp.body["id"]


def test_storages_are_defined_on_every_node(two: dict):
    (storage,) = two["admin"].get("/api/v1/storages").body["items"]
    assert set(storage["nodes"]) == set(node_ids(two["admin"]).values())
    assert all(n["state"] == "active" for n in storage["nodes"].values())


def test_placement_picks_most_memory_left_and_respects_overcommit(two: dict):
    admin = two["admin"]
    ids = node_ids(admin)
    big = template(admin, 6000)  # each test node has 8192 MiB
    first = admin.run("POST", "/api/v1/vms", {"name": "v1", "vm_template": big})
    second = admin.run("POST", "/api/v1/vms", {"name": "v2", "vm_template": big})
    placed = {admin.get(f"/api/v1/vms/{t['result']['vm']}").body["node"]
              for t in (first, second)}
    assert placed == set(ids.values())  # the second went to the emptier node
    full = admin.post("/api/v1/vms", {"name": "v3", "vm_template": big})
    assert full.status == 503 and full.body["error"]["code"] == "no_capacity"
    assert admin.patch("/api/v1/settings", {"memory_overcommit": 2.0}).status == 200
    admin.run("POST", "/api/v1/vms", {"name": "v3", "vm_template": big})
    bad = admin.patch("/api/v1/settings", {"memory_overcommit": 0})
    assert bad.status == 422


def test_maintenance_nodes_take_no_new_vms(two: dict):
    admin = two["admin"]
    ids = node_ids(admin)
    resp = admin.patch(f"/api/v1/nodes/{ids['b']}", {"maintenance": True,
                                                      "maintenance_reason": "new RAM"})
    assert resp.status == 200 and resp.body["status"] == "maintenance"
    admin.wait_task(resp.body["task"]["id"])
    small = template(admin, 256)
    for i in range(3):
        task = admin.run("POST", "/api/v1/vms", {"name": f"w{i}", "vm_template": small})
        assert admin.get(f"/api/v1/vms/{task['result']['vm']}").body["node"] == ids["demo"]


def test_migration_preflight_says_why(two: dict):
    admin = two["admin"]
    ids = node_ids(admin)
    small = template(admin, 256)
    task = admin.run("POST", "/api/v1/vms", {"name": "mv", "vm_template": small,
                                             "node": ids["demo"]})
    vm_id = task["result"]["vm"]
    same = admin.get(f"/api/v1/vms/{vm_id}/migration-check?node={ids['demo']}").body
    assert not same["ok"] and "already on that node" in same["problems"][0]
    unknown = admin.get(f"/api/v1/vms/{vm_id}/migration-check?node=nope").body
    assert not unknown["ok"] and "not found" in unknown["problems"][0]
    refused = admin.post(f"/api/v1/vms/{vm_id}/actions/migrate", {"node": ids["demo"]})
    assert refused.status == 409 and refused.body["error"]["code"] == "migration_refused"
    assert admin.post(f"/api/v1/vms/{vm_id}/actions/migrate", {}).status == 422
    admin.patch(f"/api/v1/nodes/{ids['b']}", {"maintenance": True})
    check = admin.get(f"/api/v1/vms/{vm_id}/migration-check?node={ids['b']}").body
    assert "in maintenance" in " ".join(check["problems"])
    assert admin.get(f"/api/v1/vms/{vm_id}").body["node"] == ids["demo"]


def test_node_add_bad_input_changes_nothing(two: dict):
    admin = two["admin"]
    before = admin.get("/api/v1/nodes").body["items"]
    fp = "SHA256:" + "A" * 43
    cases = [
        ({"name": "n", "host": "h;reboot", "host_key_fingerprint": fp, "password": "x"}, 422),
        ({"name": "n", "host": "127.0.0.1", "host_key_fingerprint": "md5:xx",
          "password": "x"}, 422),
        ({"name": "n", "host": "127.0.0.1", "host_key_fingerprint": fp}, 422),
        ({"name": "n", "host": "127.0.0.1", "host_key_fingerprint": fp, "password": "x",
          "ssh_private_key": "k"}, 422),
        ({"name": "n", "host": "127.0.0.1", "host_key_fingerprint": fp,
          "ssh_private_key": "not a key"}, 422),
        ({"name": "b", "host": "127.0.0.2", "host_key_fingerprint": fp, "password": "x"}, 409),
        ({"name": "n", "host": "127.0.0.1", "port": 70000, "host_key_fingerprint": fp,
          "password": "x"}, 422),
    ]
    for body, status in cases:
        resp = admin.post("/api/v1/nodes", body)
        assert resp.status == status, (body, resp)
    closed = admin.post("/api/v1/nodes/host-key", {"host": "127.0.0.1", "port": 1})
    assert closed.status == 503 and closed.body["error"]["code"] == "ssh_unreachable"
    task = admin.post("/api/v1/nodes", {"name": "n", "host": "127.0.0.1", "port": 1,
                                        "host_key_fingerprint": fp, "password": "x"})
    final = admin.wait_task(task.body["task"]["id"])
    assert final["state"] == "failed" and final["error"]["code"] == "ssh_unreachable"
    after = admin.get("/api/v1/nodes").body["items"]
    assert [n["id"] for n in after] == [n["id"] for n in before]
    assert not list((two["panel"].data_dir / "ssh").glob("known_hosts-*"))


def test_node_with_vms_cannot_be_removed(two: dict):
    admin = two["admin"]
    ids = node_ids(admin)
    small = template(admin, 256)
    admin.run("POST", "/api/v1/vms", {"name": "pin", "vm_template": small, "node": ids["b"]})
    resp = admin.delete(f"/api/v1/nodes/{ids['b']}")
    assert resp.status == 409 and resp.body["error"]["code"] == "node_has_vms"


def test_a_node_that_does_not_match_the_cluster_is_refused_with_reasons():
    from hypervisor_panel.cluster.checks import compatibility_problems, parse_os_release

    member = {**parse_os_release('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian 12"\n'),
              "arch": "x86_64", "libvirt_version": "9.0.0", "hypervisor_version": "7.2.22"}
    same = {**member, "libvirt_version": "9.0.1"}
    assert compatibility_problems(same, [("local", member)]) == []
    other = {**member, "os_id": "ubuntu", "os_version": "24.04", "arch": "aarch64",
             "libvirt_version": "10.0.0", "hypervisor_version": "8.2.2"}
    problems = compatibility_problems(other, [("local", member)])
    assert len(problems) == 5
    assert "OS ubuntu differs from node 'local' (debian)" in problems
    assert any(p.startswith("libvirt major version 10") for p in problems)
