"""Users' quotas (VMs, IP addresses, backups), their permissions, and what users see of
storages: through the API of a served panel on the libvirt test driver.

The network mode is the test-only isolated mode (tests/support/netmode.py), as in
test_networks_api.py; every VM on the test network takes an IPv4 and an IPv6 address.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hypervisor_panel.backups.taking import BackupTaker
from hypervisor_panel.errors import Forbidden
from hypervisor_panel.limits import QUOTA_MAXIMA
from tests.support.api import assert_error
from tests.support.client import Client
from tests.test_networks_api import env  # noqa: F401  (the fixture)

PASSWORD = "quota-password-1"


def _user(admin: Client, name: str, **fields: Any) -> tuple[dict, Client]:
    made = admin.post("/api/v1/users", {"name": name, "password": PASSWORD, **fields})
    assert made.status == 201, made
    return made.body, Client(admin.base).login(name, PASSWORD)


def _in_use(admin: Client, pool: dict) -> int:
    return admin.get(f"/api/v1/ip-pools/{pool['id']}").body["usage"]["in_use"]


def _create(client: Client, setup: dict, name: str, **extra: Any):
    return client.post("/api/v1/vms", {"name": name, "vm_template": setup["tiny"]["id"],
                                       "network": setup["net"]["id"], **extra})


def test_quota_and_permission_values_are_bounded_and_known(env: dict):  # noqa: F811
    admin = env["admin"]
    for bad in ({"vms": QUOTA_MAXIMA["vms"] + 1}, {"ips": -1}, {"snaps": 1},
                {"disk_gib": 1.5}, {"backups": True}):
        assert_error(admin.post("/api/v1/users", {"name": "q", "password": PASSWORD,
                                                  "quota": bad}), 422)
    assert_error(admin.post("/api/v1/users", {"name": "q", "password": PASSWORD,
                                              "permissions": {"root": True}}), 422)
    assert [u["name"] for u in admin.get("/api/v1/users").body["items"]] == ["admin"]
    made, _ = _user(admin, "q", quota={"vms": 2, "disk_gib": 10, "ips": 4, "backups": 3},
                    permissions={"add_recipes": True})
    assert made["quota"] == {"vms": 2, "disk_gib": 10, "ips": 4, "backups": 3}
    assert made["permissions"] == {"add_recipes": True}
    patched = admin.patch(f"/api/v1/users/{made['id']}", {"permissions": {"upload_isos": True}})
    assert patched.status == 200 and patched.body["permissions"] == {"upload_isos": True}


def test_an_ip_quota_refuses_the_vm_or_address_beyond_it_and_changes_nothing(
        env: dict):  # noqa: F811
    admin = env["admin"]
    bob, as_bob = _user(admin, "bob", quota={"ips": 3})
    first = as_bob.run("POST", "/api/v1/vms", {"name": "b1", "vm_template": env["tiny"]["id"],
                                               "network": env["net"]["id"]})
    vm_id = first["result"]["vm"]
    assert _in_use(admin, env["v4"]) == 1 and _in_use(admin, env["v6"]) == 1
    assert_error(_create(as_bob, env, "b2"), 403, "quota_exceeded")
    assert [v["name"] for v in admin.get("/api/v1/vms").body["items"]] == ["b1"]
    assert _in_use(admin, env["v4"]) == 1 and _in_use(admin, env["v6"]) == 1
    nic = admin.get(f"/api/v1/vms/{vm_id}").body["interfaces"][0]["id"]
    # An admin adding addresses to bob's VM is held to bob's quota too.
    grown = admin.post(f"/api/v1/vms/{vm_id}/interfaces/{nic}/addresses",
                       {"pool": env["v4"]["id"]})
    assert grown.status == 201 and len(grown.body["addresses"]) == 3, grown
    assert_error(admin.post(f"/api/v1/vms/{vm_id}/interfaces/{nic}/addresses",
                            {"pool": env["v4"]["id"]}), 403, "quota_exceeded")
    assert_error(as_bob.post(f"/api/v1/vms/{vm_id}/interfaces",
                             {"network": env["net"]["id"]}), 403, "quota_exceeded")
    assert len(admin.get(f"/api/v1/vms/{vm_id}").body["interfaces"]) == 1
    assert _in_use(admin, env["v4"]) == 2 and _in_use(admin, env["v6"]) == 1
    # What the user holds, as they and admins see it.
    usage = as_bob.get("/api/v1/auth/me").body["usage"]
    assert usage == {"vms": 1, "vcpus": 1, "memory_mib": 16, "disk_gib": 1, "ips": 3,
                     "snapshots": 0, "backups": 0}, usage
    assert admin.get(f"/api/v1/users/{bob['id']}").body["usage"] == usage
    # Admins have no quota: the same requests pass for the admin's own VMs.
    mine = admin.run("POST", "/api/v1/vms", {"name": "a1", "vm_template": env["tiny"]["id"],
                                             "network": env["net"]["id"]})
    assert mine["state"] == "succeeded"


def test_concurrent_creates_cannot_both_take_the_last_addresses(env: dict):  # noqa: F811
    admin = env["admin"]
    _bob, as_bob = _user(admin, "carol", quota={"ips": 2})
    barrier = threading.Barrier(6)
    answers: list[Any] = []

    def create(i: int) -> None:
        client = Client(as_bob.base, token=as_bob.token)
        barrier.wait()
        answers.append(_create(client, env, f"c{i}"))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status for a in answers) == [202] + [403] * 5, answers
    assert all(a.body["error"]["code"] == "quota_exceeded" for a in answers if a.status == 403)
    assert _in_use(admin, env["v4"]) == 1 and _in_use(admin, env["v6"]) == 1
    assert len(admin.get("/api/v1/vms").body["items"]) == 1


def test_a_backups_quota_refuses_a_backup_and_is_atomic_at_publish(env: dict,  # noqa: F811
                                                                     tmp_path: Path):
    admin, panel = env["admin"], env["panel"]
    dave, _ = _user(admin, "dave", quota={"backups": 1})
    vm = admin.run("POST", "/api/v1/vms", {"name": "d1", "vm_template": env["tiny"]["id"],
                                           "owner": dave["id"]})["result"]["vm"]
    target = admin.post("/api/v1/backup-targets", {"name": "here", "backend": "local",
                                                    "options": {"path": str(tmp_path / "b")}})
    assert target.status == 201, target

    def record(i: int) -> dict[str, Any]:
        return {"kind": "vm", "vm": vm, "owner": dave["id"], "target": target.body["id"],
                "archive": f"vm-{vm}/{i}.hvpbak", "created": time.time(), "name": f"b{i}"}

    # Two backups publishing at once: one is recorded, the other refused.
    barrier, outcomes = threading.Barrier(2), []

    def publish(i: int) -> None:
        barrier.wait()
        try:
            outcomes.append(panel.backups.add(record(i))["id"])
        except Forbidden as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("quota_exceeded") == 1 and len(outcomes) == 2
    # Now at the quota: the API refuses the next backup before any task starts.
    tasks_before = len(admin.get("/api/v1/tasks").body["items"])
    assert_error(admin.post(f"/api/v1/vms/{vm}/actions/backup",
                            {"target": target.body["id"]}), 403, "quota_exceeded")
    assert len(admin.get("/api/v1/tasks").body["items"]) == tasks_before
    # An archive written while another backup took the last unit goes again.
    opened = panel.backup_targets.open(target.body["id"])
    with opened.open_write(f"vm-{vm}/late.hvpbak") as writer:
        writer.write(b"archive bytes")
        writer.publish(len(b"archive bytes"))
    assert opened.stat(f"vm-{vm}/late.hvpbak") is not None
    with pytest.raises(Forbidden):
        BackupTaker(panel.backups)._publish(opened, f"vm-{vm}/late.hvpbak", record(9))
    assert opened.stat(f"vm-{vm}/late.hvpbak") is None
    for backup in panel.backups.listing(admin.get("/api/v1/auth/me").body):
        panel.store.delete("backups", backup["id"])


def test_users_add_recipes_only_with_the_permission(env: dict):  # noqa: F811
    admin = env["admin"]
    script = ("#!/bin/sh\n# metadata_begin\n# recipe: erin_tool\n# tags: debian\n"
              "# metadata_end\necho hi\n")
    erin, as_erin = _user(admin, "erin")
    assert_error(as_erin.post("/api/v1/recipes", {"script": script}), 403)
    admin.patch(f"/api/v1/users/{erin['id']}", {"permissions": {"add_recipes": True}})
    added = as_erin.post("/api/v1/recipes", {"script": script})
    assert added.status == 201, added
    _frank, as_frank = _user(admin, "frank")
    assert_error(as_frank.get(f"/api/v1/recipes/{added.body['id']}"), 404)


def test_users_upload_installer_isos_only_with_the_permission_and_see_only_theirs(
        env: dict):  # noqa: F811
    admin = env["admin"]
    storage = admin.get("/api/v1/storages").body["items"][0]["id"]
    iso = {"name": "my-installer", "os_family": "linux", "kind": "iso", "format": "iso",
           "storage": storage}
    image = {**iso, "name": "my-image", "kind": "image", "format": "qcow2"}
    gina, as_gina = _user(admin, "gina")
    assert_error(as_gina.post("/api/v1/os-templates/uploads", iso), 403, "permission_required")
    admin.patch(f"/api/v1/users/{gina['id']}", {"permissions": {"upload_isos": True}})
    assert_error(as_gina.post("/api/v1/os-templates/uploads", image), 403,
                 "admins_only_images")
    made = as_gina.post("/api/v1/os-templates/uploads", iso)
    assert made.status == 201 and made.body["owner"] == gina["id"], made
    tid = made.body["id"]
    assert [t["id"] for t in as_gina.get("/api/v1/os-templates").body["items"]] == [tid]
    _hank, as_hank = _user(admin, "hank", permissions={"upload_isos": True})
    assert as_hank.get("/api/v1/os-templates").body["items"] == []
    assert_error(as_hank.get(f"/api/v1/os-templates/{tid}"), 404)
    resp = as_hank.request("PUT", f"/api/v1/os-templates/{tid}/content", raw=b"x" * 10)
    assert_error(resp, 404)
    assert_error(as_hank.delete(f"/api/v1/os-templates/{tid}"), 404)
    assert_error(as_hank.post("/api/v1/vms", {"name": "h1", "vm_template": env["tiny"]["id"],
                                              "os_template": tid}), 422)
    assert admin.get(f"/api/v1/os-templates/{tid}").body["state"] == "uploading"
    assert as_gina.delete(f"/api/v1/os-templates/{tid}").status == 204
    assert admin.get("/api/v1/os-templates").body["items"] == []


def test_users_see_storages_without_paths_or_options(env: dict):  # noqa: F811
    admin = env["admin"]
    _ivy, as_ivy = _user(admin, "ivy")
    full = admin.get("/api/v1/storages").body["items"]
    path = full[0]["options"]["path"]
    seen = as_ivy.get("/api/v1/storages")
    assert seen.status == 200 and [s["id"] for s in seen.body["items"]] == [
        s["id"] for s in full]
    assert all("options" not in s for s in seen.body["items"])
    one = as_ivy.get(f"/api/v1/storages/{full[0]['id']}")
    assert one.status == 200 and path not in json.dumps(seen.body) + json.dumps(one.body)
    assert set(one.body) <= {"id", "name", "backend", "shared", "description", "nodes"}
