"""VM snapshots through the API on the real libvirtd (internal qcow2 snapshots): a stopped
VM's disk goes back byte for byte, a running VM's snapshot holds its memory (reverting a
stopped VM to it runs it again), a revert drops the backups' checkpoints (the next backup is
a full one and says why), and what would lose the snapshots is refused."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypervisor_panel.errors import Conflict
from hypervisor_panel.vms.snapshots import unsupported_disks
from tests.support.api import assert_error
from tests.support.client import Client
from tests.support.realvirt import ensure_libvirtd, served_panel
from tests.test_backups_real import raw_sha
from tests.test_os_install_real import _clean

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    uri = ensure_libvirtd()
    tag = uuid.uuid4().hex[:6]
    pool_dir = Path(f"/var/lib/libvirt/images/hvp-snap-{tag}")
    root = tmp_path_factory.mktemp("snap")
    with served_panel(root / "data", uri) as (panel, admin):
        storage = admin.post("/api/v1/storages", {"name": f"snap-{tag}", "backend": "dir",
                                                  "options": {"path": str(pool_dir)}}).body
        env = {"panel": panel, "admin": admin, "tag": tag, "storage": storage,
               "pool_dir": pool_dir, "root": root}
        try:
            yield env
        finally:
            for backup in admin.get("/api/v1/backups").body["items"]:
                admin.delete(f"/api/v1/backups/{backup['id']}")
            for target in admin.get("/api/v1/backup-targets").body["items"]:
                admin.delete(f"/api/v1/backup-targets/{target['id']}")
            _clean(admin, storage, pool_dir)


def _write(disk: Path, data: Path, offset: int) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -q -s {data} {offset} 4M",
                    str(disk)], check=True, capture_output=True)


def _state(admin: Client, vm_id: str) -> str:
    return admin.get(f"/api/v1/vms/{vm_id}").body["state"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_snapshots_revert_disks_and_memory_and_restart_the_backup_chain(env: dict[str, Any]):
    admin: Client = env["admin"]
    template = admin.post("/api/v1/vm-templates", {"name": f"snap-{env['tag']}",
                                                   "memory_mib": 64, "vcpus": 1,
                                                   "disk_gib": 1}).body
    vm_id = admin.run("POST", "/api/v1/vms", {"name": f"snap-{env['tag']}",
                                              "vm_template": template["id"],
                                              "storage": env["storage"]["id"]})["result"]["vm"]
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    disk = env["pool_dir"] / vm["disks"][0]["volume"]
    one, two = env["root"] / "one.bin", env["root"] / "two.bin"
    one.write_bytes(os.urandom(4 * MIB))
    two.write_bytes(os.urandom(4 * MIB))
    _write(disk, one, 8 * MIB)
    at_snapshot = raw_sha(disk)

    # 1. A stopped VM: the snapshot holds the disk; a revert brings it back byte for byte.
    taken = admin.run("POST", f"/api/v1/vms/{vm_id}/snapshots",
                      {"name": "before", "description": "<b>&'\"</b>"})
    assert taken["result"] == {"snapshot": "before", "memory": False}
    _write(disk, two, 8 * MIB)
    assert raw_sha(disk) != at_snapshot
    admin.run("POST", f"/api/v1/vms/{vm_id}/snapshots/before/actions/revert", {})
    assert raw_sha(disk) == at_snapshot and _state(admin, vm_id) == "stopped"
    assert_error(admin.post(f"/api/v1/vms/{vm_id}/snapshots", {"name": "before"}), 409,
                 "already_exists")

    # 2. A running VM: the snapshot holds its memory; reverting a stopped VM runs it again.
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/start")
    live = admin.run("POST", f"/api/v1/vms/{vm_id}/snapshots", {"name": "live"})
    assert live["result"]["memory"] is True
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/destroy")
    admin.run("POST", f"/api/v1/vms/{vm_id}/snapshots/live/actions/revert", {})
    assert _state(admin, vm_id) == "running"
    listed = admin.get(f"/api/v1/vms/{vm_id}/snapshots").body["items"]
    assert [(s["name"], s["memory"], s["state"]) for s in listed] == [
        ("before", False, "ready"), ("live", True, "ready")]
    assert listed[0]["description"] == "<b>&'\"</b>"

    # 3. A backup makes a checkpoint; a revert drops it, the next backup is a full one.
    target = admin.post("/api/v1/backup-targets", {
        "name": f"snap-{env['tag']}", "backend": "local",
        "options": {"path": str(env["root"] / "backups")}}).body
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/backup",
              {"target": target["id"], "mode": "full"}, timeout=300)
    reverted = admin.run("POST", f"/api/v1/vms/{vm_id}/snapshots/live/actions/revert", {})
    assert reverted["result"]["checkpoints_deleted"] == 1
    assert any("next backup is a full one" in line for line in reverted["log"])
    again = admin.run("POST", f"/api/v1/vms/{vm_id}/actions/backup",
                      {"target": target["id"], "mode": "incremental"}, timeout=300)
    assert again["result"]["type"] == "full" and again["result"]["fallback_reason"]

    # 4. What would lose the snapshots is refused (migration: test_a_vm_with_snapshots_...).
    backup = admin.get(f"/api/v1/backups?vm={vm_id}").body["items"][0]
    assert_error(admin.post(f"/api/v1/backups/{backup['id']}/actions/restore",
                            {"mode": "replace"}), 409, "vm_has_snapshots")

    # 5. Deleting a snapshot removes it from the disk too.
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/destroy")
    admin.run("DELETE", f"/api/v1/vms/{vm_id}/snapshots/before")
    assert [s["name"] for s in admin.get(f"/api/v1/vms/{vm_id}/snapshots").body["items"]] \
        == ["live"]
    info = subprocess.run(["qemu-img", "snapshot", "-U", "-l", str(disk)], check=True,
                          capture_output=True, text=True).stdout
    assert "live" in info and "before" not in info
    assert_error(admin.delete(f"/api/v1/vms/{vm_id}/snapshots/nope"), 404,
                 "snapshot_not_found")


def test_only_qcow2_file_disks_can_hold_internal_snapshots():
    xml = """<domain><devices>
      <disk type='file' device='disk'><driver type='qcow2'/><target dev='vda'/></disk>
      <disk type='file' device='disk'><driver type='raw'/><target dev='vdb'/></disk>
      <disk type='network' device='disk'><driver type='raw'/><target dev='vdc'/></disk>
      <disk type='file' device='cdrom'><driver type='raw'/><target dev='sda'/></disk>
    </devices></domain>"""
    assert unsupported_disks(xml) == ["vdb", "vdc"]


def test_a_vm_with_snapshots_is_not_migrated_and_a_quota_holds_under_concurrency(two: dict):
    """On two test-driver nodes: the snapshot quota is checked with the snapshot's entry
    under the store lock (6 at once, quota 2: exactly 2 pass), and a VM with snapshots is
    not migrated (its snapshots would stay behind)."""
    admin: Client = two["admin"]
    made = admin.post("/api/v1/users", {"name": "sara", "password": "sara-password-1",
                                        "quota": {"snapshots": 2}}).body
    sara = Client(two["server"]).login("sara", "sara-password-1")
    template = next(t for t in admin.get("/api/v1/vm-templates").body["items"]
                    if t["name"] == "small")
    vms = [sara.run("POST", "/api/v1/vms", {"name": f"s{i}", "vm_template": template["id"],
                                            "node": two["ids"]["demo"]})["result"]["vm"]
           for i in range(6)]
    vm_id = vms[0]
    tasks = two["panel"].tasks

    def busy(*_args: Any, **_kw: Any) -> None:
        raise Conflict("the VM is busy", code="busy")

    tasks.submit = busy  # the VM's lock is taken: the reserved entry must go again
    try:
        assert_error(sara.post(f"/api/v1/vms/{vm_id}/snapshots", {"name": "x"}), 409, "busy")
    finally:
        del tasks.submit
    assert sara.get(f"/api/v1/vms/{vm_id}/snapshots").body["items"] == []
    barrier, answers = threading.Barrier(6), []

    def take(i: int) -> None:
        client = Client(two["server"], token=sara.token)
        barrier.wait()
        answers.append(client.post(f"/api/v1/vms/{vms[i]}/snapshots", {"name": "snap"}))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status for a in answers) == [202, 202, 403, 403, 403, 403], answers
    for answer in answers:
        if answer.status == 202:
            assert sara.wait_task(answer.body["task"]["id"])["state"] == "succeeded"
    assert sum(len(sara.get(f"/api/v1/vms/{v}/snapshots").body["items"]) for v in vms) == 2
    vm_id = next(v for v in vms if sara.get(f"/api/v1/vms/{v}/snapshots").body["items"])
    check = admin.get(f"/api/v1/vms/{vm_id}/migration-check?node={two['ids']['b']}").body
    assert any("snapshot(s)" in problem for problem in check["problems"]), check
    assert_error(admin.post(f"/api/v1/vms/{vm_id}/actions/migrate",
                            {"node": two["ids"]["b"]}), 409, "migration_refused")
    assert made["quota"] == {"snapshots": 2}
