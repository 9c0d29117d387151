"""A real two-node cluster on one machine: the system libvirtd plus a second libvirtd in its
own mount namespace, joined over a real sshd (paramiko + libvirt's libssh2 transport).

A booted TCG guest is live-migrated to the second node and back through the API, and keeps
counting its uptime; killing the second daemon takes its node offline without slowing the
API, and the node comes back by itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor_panel.nodes.manager import WATCH_INTERVAL
from hypervisor_panel.panel import Panel
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.server import serve_in_thread
from tests.conftest import ADMIN_PASSWORD
from tests.support.client import Client
from tests.support.cluster import (
    make_client_key,
    remove_dir,
    short_tempdir,
    start_libvirtd2,
    start_sshd,
    stop_libvirtd2,
    stop_sshd,
    system_serial_log_path,
)
from tests.support.guest import MARKER, UPTIME_PREFIX, build_guest_assets
from tests.support.realvirt import REPO_ROOT, ensure_libvirtd

pytestmark = pytest.mark.slow
# After a node's cause of failure is gone: one watcher round plus one (slow) SSH connect.
RECONNECT_MARGIN = 25.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    uri = ensure_libvirtd()
    tag = uuid.uuid4().hex[:6]
    images = Path(f"/var/lib/libvirt/images/hvp-cl-{tag}")
    with contextlib.ExitStack() as undo:  # every step is undone, even when one fails
        sshd_dir, d2_dir = short_tempdir("hvps-"), short_tempdir("hvpn2-")
        undo.callback(remove_dir, sshd_dir)
        undo.callback(remove_dir, d2_dir)
        sshd = start_sshd(sshd_dir)
        undo.callback(stop_sshd, sshd_dir)
        daemon2 = start_libvirtd2(d2_dir)
        undo.callback(stop_libvirtd2, d2_dir)
        key, pub = make_client_key(sshd_dir / "client_key")
        sshd.authorize_key(pub)
        panel = Panel(tmp_path_factory.mktemp("cluster") / "data", local_uri=uri,
                      default_storage_path=None)
        panel.start(admin_password=ADMIN_PASSWORD)
        undo.callback(panel.close)
        srv, port = serve_in_thread(create_app(panel))
        undo.callback(srv.stop)
        admin = Client(f"http://127.0.0.1:{port}").login("admin", ADMIN_PASSWORD)
        undo.callback(shutil.rmtree, images, ignore_errors=True)
        storage = admin.post("/api/v1/storages", {
            "name": f"cl-{tag}", "backend": "dir", "options": {"path": str(images)}})
        assert storage.status == 201, storage
        undo.callback(admin.request, "DELETE", f"/api/v1/storages/{storage.body['id']}")
        undo.callback(remove_vms, admin)
        yield {"admin": admin, "panel": panel, "sshd": sshd, "daemon2": daemon2, "key": key,
               "tag": tag, "storage": storage.body, "d2_dir": d2_dir}


def remove_vms(admin: Client) -> None:
    for vm in admin.get("/api/v1/vms").body["items"]:
        admin.request("POST", f"/api/v1/vms/{vm['id']}/actions/destroy", {})
        time.sleep(0.5)
        admin.request("DELETE", f"/api/v1/vms/{vm['id']}")
    time.sleep(2)


def node_body(env: dict, **extra) -> dict:
    return {"name": "node2", "host": "127.0.0.1", "port": env["sshd"].port,
            "username": "root", "ssh_private_key": Path(env["key"]).read_text(),
            "host_key_fingerprint": env["sshd"].fingerprint,
            "libvirt_socket": str(env["daemon2"].socket), **extra}


def wait_node(admin: Client, node_id: str, status: str, timeout: float = 60) -> dict:
    started = time.monotonic()
    while True:
        node = admin.get(f"/api/v1/nodes/{node_id}").body
        if node["status"] == status:
            return node
        assert time.monotonic() - started < timeout, (
            f"node not {status} after {timeout:.0f} s: {node['status']} "
            f"({node['status_reason']})")
        time.sleep(0.5)


def uptime_values(text: str) -> list[int]:
    return [int(m) for m in re.findall(rf"{UPTIME_PREFIX} (\d+)", text)]


@pytest.fixture(scope="module")
def node2(cluster: dict) -> dict:
    admin: Client = cluster["admin"]
    key = admin.post("/api/v1/nodes/host-key", {"host": "127.0.0.1",
                                                "port": cluster["sshd"].port})
    assert key.status == 200 and key.body["fingerprint"] == cluster["sshd"].fingerprint
    wrong = admin.post("/api/v1/nodes", node_body(cluster,
                                                  host_key_fingerprint="SHA256:" + "A" * 43))
    failed = admin.wait_task(wrong.body["task"]["id"])
    assert failed["state"] == "failed" and failed["error"]["code"] == "host_key_mismatch"
    assert len(admin.get("/api/v1/nodes").body["items"]) == 1  # no half-added node
    task = admin.run("POST", "/api/v1/nodes", node_body(cluster), timeout=120)
    node = admin.get(f"/api/v1/nodes/{task['result']['node']}").body
    assert node["status"] == "online" and node["kind"] == "ssh"
    return node


def test_node_joins_over_ssh_with_its_host_key_pinned(cluster: dict, node2: dict):
    admin: Client = cluster["admin"]
    assert node2["host_key_fingerprint"] == cluster["sshd"].fingerprint
    assert node2["uri"].startswith("qemu+libssh2://root@127.0.0.1:")
    assert "ssh_private_key" not in node2 and "password" not in node2
    assert node2["resources"]["libvirt_version"] == "9.0.0"
    storage = admin.get(f"/api/v1/storages/{cluster['storage']['id']}").body
    assert storage["nodes"][node2["id"]]["state"] == "active"  # defined on the new node
    dup = admin.post("/api/v1/nodes", node_body(cluster, name="again"))
    assert dup.status == 409 and dup.body["error"]["code"] == "node_exists"


def boot_guest(cluster: dict, prefix: str) -> tuple[str, str, dict, Path]:
    """A 128 MiB guest running on the local node: (name, VM id, local node, serial log)."""
    admin: Client = cluster["admin"]
    assets = build_guest_assets(REPO_ROOT / ".cache" / "guest")
    name = f"{prefix}-{cluster['tag']}"
    template = admin.post("/api/v1/vm-templates", {"name": name, "memory_mib": 128,
                                                   "vcpus": 1, "disk_gib": 1}).body
    local = next(n for n in admin.get("/api/v1/nodes").body["items"] if n["kind"] == "local")
    task = admin.run("POST", "/api/v1/vms", {
        "name": name, "vm_template": template["id"], "node": local["id"],
        "storage": cluster["storage"]["id"], "start": True,
        "boot": {"kernel": str(assets.kernel), "initrd": str(assets.initrd),
                 "cmdline": "console=ttyS0 quiet"}}, timeout=120)
    log = system_serial_log_path(name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and f"{UPTIME_PREFIX} 2" not in (
            log.read_text(errors="replace") if log.exists() else ""):
        time.sleep(0.3)
    assert MARKER in log.read_text(errors="replace")
    return name, task["result"]["vm"], local, log


def test_live_migration_there_and_back_keeps_the_guest_running(cluster: dict, node2: dict):
    admin: Client = cluster["admin"]
    name, vm_id, local, log1 = boot_guest(cluster, "mig")

    check = admin.get(f"/api/v1/vms/{vm_id}/migration-check?node={node2['id']}").body
    assert check == {"ok": True, "problems": []}
    moved = admin.run("POST", f"/api/v1/vms/{vm_id}/actions/migrate", {"node": node2["id"]},
                      timeout=180)
    assert moved["result"]["live"] is True and moved["result"]["copied_disks"]
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    assert vm["node"] == node2["id"] and vm["state"] == "running"
    log2 = cluster["daemon2"].serial_log_path(name)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not uptime_values(
            log2.read_text(errors="replace") if log2.exists() else ""):
        time.sleep(0.3)
    before = max(uptime_values(log1.read_text(errors="replace")))
    after_there = uptime_values(log2.read_text(errors="replace"))
    assert after_there and min(after_there) >= before  # same guest, still counting

    back = admin.run("POST", f"/api/v1/vms/{vm_id}/actions/migrate", {"node": local["id"]},
                     timeout=180)
    assert back["result"]["live"] is True
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    assert vm["node"] == local["id"] and vm["state"] == "running"
    deadline = time.monotonic() + 30
    last_there = max(uptime_values(log2.read_text(errors="replace")))
    while time.monotonic() < deadline:
        back_here = uptime_values(log1.read_text(errors="replace"))
        if back_here and back_here[-1] > last_there:
            break
        time.sleep(0.3)
    assert back_here[-1] > last_there, "the guest did not keep counting after coming back"
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/destroy")
    admin.run("DELETE", f"/api/v1/vms/{vm_id}")


def test_a_cancelled_live_migration_leaves_the_vm_running_on_its_node(cluster: dict,
                                                                      node2: dict):
    admin: Client = cluster["admin"]
    name, vm_id, local, log = boot_guest(cluster, "cancel")
    # 1 MiB/s for 128 MiB of RAM: the migration runs long enough to be cancelled.
    started = admin.post(f"/api/v1/vms/{vm_id}/actions/migrate",
                         {"node": node2["id"], "max_bandwidth_mib": 1})
    assert started.status == 202, started
    task_id = started.body["task"]["id"]
    deadline = time.monotonic() + 30
    while admin.get(f"/api/v1/tasks/{task_id}").body["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(2)  # well inside the copy
    cancel = admin.post(f"/api/v1/tasks/{task_id}/actions/cancel", {})
    assert cancel.status == 200, cancel
    final = admin.wait_task(task_id, timeout=60)
    assert final["state"] == "cancelled", final
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    assert vm["node"] == local["id"] and vm["state"] == "running"
    backend = cluster["panel"].storages.backend(
        cluster["panel"].storages.require(cluster["storage"]["id"]))
    conn2 = cluster["panel"].nodes.connection(node2["id"]).get()
    assert name not in [d.name() for d in conn2.listAllDomains()]
    assert f"{name}-disk0.qcow2" not in [v["name"] for v in backend.list_volumes(conn2)]
    before = max(uptime_values(log.read_text(errors="replace")))
    deadline = time.monotonic() + 20
    while max(uptime_values(log.read_text(errors="replace"))) <= before:
        assert time.monotonic() < deadline, "the guest stopped counting after the cancel"
        time.sleep(0.3)
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/destroy")
    admin.run("DELETE", f"/api/v1/vms/{vm_id}")


def test_a_failed_migration_leaves_the_vm_running_on_its_node(cluster: dict, node2: dict):
    admin: Client = cluster["admin"]
    panel = cluster["panel"]
    template = admin.post("/api/v1/vm-templates", {"name": f"fail-{cluster['tag']}",
                                                   "memory_mib": 64, "vcpus": 1,
                                                   "disk_gib": 1}).body
    local = next(n for n in admin.get("/api/v1/nodes").body["items"] if n["kind"] == "local")
    name = f"fail-{cluster['tag']}"
    task = admin.run("POST", "/api/v1/vms", {"name": name, "vm_template": template["id"],
                                             "node": local["id"], "start": True,
                                             "storage": cluster["storage"]["id"]})
    vm_id = task["result"]["vm"]
    # Something already sits where the disk copy must go on node 2.
    backend = panel.storages.backend(panel.storages.require(cluster["storage"]["id"]))
    backend.create_volume(panel.nodes.connection(node2["id"]).get(), f"{name}-disk0.qcow2",
                          1024**3)
    resp = admin.post(f"/api/v1/vms/{vm_id}/actions/migrate", {"node": node2["id"]})
    failed = admin.wait_task(resp.body["task"]["id"])
    assert failed["state"] == "failed" and failed["error"]["code"] == "volume_exists"
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    assert vm["node"] == local["id"] and vm["state"] == "running"
    backend.delete_volume(panel.nodes.connection(node2["id"]).get(), f"{name}-disk0.qcow2")
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/destroy")
    admin.run("DELETE", f"/api/v1/vms/{vm_id}")


def test_migration_refusals(cluster: dict, node2: dict):
    admin: Client = cluster["admin"]
    template = admin.post("/api/v1/vm-templates", {"name": f"ref-{cluster['tag']}",
                                                   "memory_mib": 64, "vcpus": 1,
                                                   "disk_gib": 1}).body
    local = next(n for n in admin.get("/api/v1/nodes").body["items"] if n["kind"] == "local")
    kernel = Path(f"/tmp/hvp-kernel-{cluster['tag']}")
    kernel.write_bytes(b"not really a kernel")
    task = admin.run("POST", "/api/v1/vms", {"name": f"ref-{cluster['tag']}",
                                             "vm_template": template["id"],
                                             "node": local["id"],
                                             "storage": cluster["storage"]["id"],
                                             "boot": {"kernel": str(kernel)}})
    kernel.unlink()  # the boot file is gone: it is on no node any more
    vm_id = task["result"]["vm"]
    same = admin.post(f"/api/v1/vms/{vm_id}/actions/migrate", {"node": local["id"]})
    assert same.status == 409 and "already on that node" in same.body["error"]["message"]
    missing = admin.get(f"/api/v1/vms/{vm_id}/migration-check?node={node2['id']}").body
    assert any(str(kernel) in p and "node2" in p for p in missing["problems"])
    refused = admin.post(f"/api/v1/vms/{vm_id}/actions/migrate", {"node": node2["id"]})
    assert refused.status == 409 and refused.body["error"]["code"] == "migration_refused"
    admin.run("DELETE", f"/api/v1/vms/{vm_id}")


def test_killed_node_goes_offline_api_stays_fast_and_node_returns(cluster: dict,
                                                                  node2: dict):
    from tests.support.cluster import kill_libvirtd2

    admin: Client = cluster["admin"]
    kill_libvirtd2(cluster["d2_dir"])
    offline = wait_node(admin, node2["id"], "offline", timeout=60)
    assert offline["status_reason"]
    started = time.monotonic()
    for _ in range(5):
        assert admin.get("/api/v1/vms").status == 200
        assert admin.get("/api/v1/nodes").status == 200
    assert time.monotonic() - started < 3  # the dead node does not slow the API
    local = next(n for n in admin.get("/api/v1/nodes").body["items"] if n["kind"] == "local")
    assert local["status"] == "online"
    start_libvirtd2(cluster["d2_dir"])
    wait_node(admin, node2["id"], "online", timeout=90)


def test_maintenance_moves_a_stopped_vm_off_the_node_with_its_disk(cluster: dict,
                                                                   node2: dict):
    admin: Client = cluster["admin"]
    template = admin.post("/api/v1/vm-templates", {"name": f"off-{cluster['tag']}",
                                                   "memory_mib": 64, "vcpus": 1,
                                                   "disk_gib": 1}).body
    name = f"off-{cluster['tag']}"
    task = admin.run("POST", "/api/v1/vms", {"name": name, "vm_template": template["id"],
                                             "node": node2["id"],
                                             "storage": cluster["storage"]["id"]})
    vm_id = task["result"]["vm"]
    disk = f"/var/lib/libvirt/images/hvp-cl-{cluster['tag']}/{name}-disk0.qcow2"
    assert cluster["daemon2"].host_path(disk).exists()  # on node 2's own disk
    resp = admin.patch(f"/api/v1/nodes/{node2['id']}", {"maintenance": True,
                                                        "maintenance_reason": "test"})
    assert resp.status == 200 and resp.body["status"] == "maintenance"
    evacuation = admin.wait_task(resp.body["task"]["id"], timeout=180)
    assert evacuation["state"] == "succeeded", evacuation
    assert evacuation["result"]["moved"] == [name]
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    local = next(n for n in admin.get("/api/v1/nodes").body["items"] if n["kind"] == "local")
    assert vm["node"] == local["id"] and vm["state"] == "stopped"
    assert Path(disk).exists() and not cluster["daemon2"].host_path(disk).exists()
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/start")  # it really works there
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/destroy")
    admin.run("DELETE", f"/api/v1/vms/{vm_id}")
    back = admin.patch(f"/api/v1/nodes/{node2['id']}", {"maintenance": False})
    assert back.status == 200 and back.body["status"] == "online"


def test_a_vm_on_the_ssh_node_is_backed_up_through_a_tunnel_and_restored(
        cluster: dict, node2: dict, tmp_path: Path):
    """QEMU's NBD export is on node 2's loopback: the panel reads it through a tunnel in
    node 2's SSH connection; the restore writes through node 2's libvirt streams."""
    from tests.test_backups_real import raw_sha

    admin: Client = cluster["admin"]
    name = f"bk2-{cluster['tag']}"
    template = admin.post("/api/v1/vm-templates", {"name": name, "memory_mib": 64,
                                                   "vcpus": 1, "disk_gib": 1}).body
    task = admin.run("POST", "/api/v1/vms", {"name": name, "vm_template": template["id"],
                                             "node": node2["id"],
                                             "storage": cluster["storage"]["id"]})
    vm = admin.get(f"/api/v1/vms/{task['result']['vm']}").body
    pool = f"/var/lib/libvirt/images/hvp-cl-{cluster['tag']}"
    disk = cluster["daemon2"].host_path(f"{pool}/{vm['disks'][0]['volume']}")
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(8 * 1024 * 1024))

    def write(offset: int) -> None:
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -q -s {data} {offset} 8M",
                        str(disk)], check=True, capture_output=True)

    write(16 * 1024 * 1024)
    before = raw_sha(disk)
    target = admin.post("/api/v1/backup-targets", {"name": f"t-{name}", "backend": "local",
                                                    "options": {"path": str(tmp_path / "b")}})
    assert target.status == 201, target
    try:
        done = admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/backup",
                         {"target": target.body["id"], "mode": "full"}, timeout=300)
        assert any("through an SSH tunnel to node node2" in line for line in done["log"]), \
            done["log"]
        backup = admin.get(f"/api/v1/backups/{done['result']['backup']}").body
        assert backup["node"] == node2["id"] and backup["data_bytes"] >= 8 * 1024 * 1024
        write(16 * 1024 * 1024 + 4096)  # the disk changes after the backup
        assert raw_sha(disk) != before
        admin.run("POST", f"/api/v1/backups/{backup['id']}/actions/restore",
                  {"mode": "replace", "start": False}, timeout=300)
        after = admin.get(f"/api/v1/vms/{vm['id']}").body
        assert after["node"] == node2["id"]
        restored = cluster["daemon2"].host_path(f"{pool}/{after['disks'][0]['volume']}")
        assert raw_sha(restored) == before
        # A running VM with a backup's checkpoint migrates; its chain then starts again.
        admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/start")
        admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/backup",
                  {"target": target.body["id"], "mode": "full"}, timeout=300)
        local = next(n for n in admin.get("/api/v1/nodes").body["items"] if n["kind"] == "local")
        admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/migrate", {"node": local["id"]},
                  timeout=300)
        moved = admin.get(f"/api/v1/vms/{vm['id']}").body
        assert moved["node"] == local["id"] and moved["state"] == "running"
        again = admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/backup",
                          {"target": target.body["id"], "mode": "incremental"}, timeout=300)
        assert again["result"]["type"] == "full", again["result"]
        assert "checkpoint" in again["result"]["fallback_reason"], again["result"]
        admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/destroy")
    finally:
        for item in admin.get(f"/api/v1/backups?vm={vm['id']}").body["items"]:
            admin.delete(f"/api/v1/backups/{item['id']}")
        admin.delete(f"/api/v1/backup-targets/{target.body['id']}")
        gone = admin.request("DELETE", f"/api/v1/vms/{vm['id']}")
        if gone.status == 202:
            admin.wait_task(gone.body["task"]["id"])


def test_wrong_password_adds_no_node(cluster: dict, node2: dict):
    admin: Client = cluster["admin"]
    pw_dir = short_tempdir("hvpw-")
    sshd = start_sshd(pw_dir, password_auth=True)  # no account has a known password
    try:
        before = [n["id"] for n in admin.get("/api/v1/nodes").body["items"]]
        resp = admin.post("/api/v1/nodes", {
            "name": "pw", "host": "127.0.0.1", "port": sshd.port, "username": "root",
            "password": "definitely-wrong", "host_key_fingerprint": sshd.fingerprint,
            "libvirt_socket": str(cluster["daemon2"].socket)})
        task = admin.wait_task(resp.body["task"]["id"])
        assert task["state"] == "failed" and task["error"]["code"] == "ssh_auth_failed"
        assert "definitely-wrong" not in str(task)
        assert [n["id"] for n in admin.get("/api/v1/nodes").body["items"]] == before
        assert "definitely-wrong" not in (cluster["panel"].data_dir / "panel.db.journal"
                                          ).read_text(errors="replace")
    finally:
        stop_sshd(pw_dir)
        remove_dir(pw_dir)


def test_a_changed_host_key_blocks_the_node_until_it_is_restored(cluster: dict,
                                                                 node2: dict):
    from tests.support.cluster import kill_libvirtd2

    admin: Client = cluster["admin"]
    original = cluster["sshd"]
    sshd_dir = original.dir
    key = original.host_key_pub.with_suffix("")
    saved = sshd_dir / "saved-host-key"
    saved.mkdir()
    shutil.copy2(key, saved / key.name)
    shutil.copy2(key.with_suffix(".pub"), saved / key.with_suffix(".pub").name)
    try:
        stop_sshd(sshd_dir)
        key.unlink()
        key.with_suffix(".pub").unlink()
        changed = start_sshd(sshd_dir)  # a new host key on the same address
        assert changed.fingerprint != original.fingerprint
        assert changed.port == original.port, "sshd moved: the node would be unreachable"
        kill_libvirtd2(cluster["d2_dir"])  # drop the connection: the panel reconnects
        start_libvirtd2(cluster["d2_dir"])
        deadline = time.monotonic() + 60
        while True:
            node = admin.get(f"/api/v1/nodes/{node2['id']}").body
            if node["status"] == "offline" and "HOST KEY" in (node["status_reason"] or ""):
                break
            assert time.monotonic() < deadline, (node["status"], node["status_reason"])
            time.sleep(0.5)
        # Several reconnect rounds: the changed key is never accepted, and the API and the
        # other node do not wait for the blocked one.
        until = time.monotonic() + 2 * WATCH_INTERVAL + 1
        while time.monotonic() < until:
            asked = time.monotonic()
            nodes = {n["id"]: n for n in admin.get("/api/v1/nodes").body["items"]}
            assert time.monotonic() - asked < 2, "the API waits for the blocked node"
            blocked = nodes[node2["id"]]
            assert blocked["status"] == "offline", (blocked["status"], blocked["status_reason"])
            assert all(n["status"] == "online" for i, n in nodes.items() if i != node2["id"])
            time.sleep(0.5)
    finally:
        stop_sshd(sshd_dir)
        shutil.copy2(saved / key.name, key)
        shutil.copy2(saved / key.with_suffix(".pub").name, key.with_suffix(".pub"))
        restored = start_sshd(sshd_dir)
    assert restored.fingerprint == original.fingerprint
    assert restored.port == original.port, "sshd moved: the node would be unreachable"
    # Promptly back: the next reconnect round (every WATCH_INTERVAL) succeeds.
    wait_node(admin, node2["id"], "online", timeout=WATCH_INTERVAL + RECONNECT_MARGIN)
