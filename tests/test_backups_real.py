"""VM backups end to end through the API: a real TCG guest, the real libvirtd's backup API
(pull mode over NBD, checkpoints), a real FTP server (pyftpdlib).

One guest made from the fast test image writes 32 MiB of random data; then:
a schedule (cron, every minute) backs it up to FTP while it runs; an FTP server killed in
the middle of an upload fails the task clearly, lists nothing, and a retry succeeds; an
incremental backup after ~10% of the data changed sends only the changed blocks; a tampered
archive is refused and nothing is overwritten; a restore in place gives a disk byte-identical
to the backed-up one and the VM boots from it with its data; a restore as a new VM too.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import Client
from tests.support.ftpserver import FtpServer
from tests.support.images import ed25519_keypair, fast_image
from tests.support.realvirt import REPO_ROOT, ensure_libvirtd, served_panel
from tests.test_os_install_real import _clean, _wait_ssh, login, sh, ssh_nic, upload_template

pytestmark = pytest.mark.slow
CACHE = REPO_ROOT / ".cache" / "images"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    uri = ensure_libvirtd()
    tag = uuid.uuid4().hex[:6]
    pool_dir = Path(f"/var/lib/libvirt/images/hvp-bk-{tag}")
    root = tmp_path_factory.mktemp("bk")
    with served_panel(root / "data", uri) as (panel, admin), \
            FtpServer(root / "ftp") as ftp, FtpServer(root / "slow", upload_rate=4 * MIB) as slow:
        storage = admin.post("/api/v1/storages", {"name": f"bk-{tag}", "backend": "dir",
                                                  "options": {"path": str(pool_dir)}}).body
        net = admin.post("/api/v1/networks", {"name": f"usr-{tag}", "mode": "user"}).body
        private, public = ed25519_keypair("bk-test")
        env = {"panel": panel, "admin": admin, "tag": tag, "storage": storage, "user_net": net,
               "private": private, "public": public, "ftp": ftp, "slow": slow,
               "pool_dir": pool_dir}
        try:
            yield env
        finally:
            for schedule in admin.get("/api/v1/backup-schedules").body["items"]:
                admin.delete(f"/api/v1/backup-schedules/{schedule['id']}")
            for backup in admin.get("/api/v1/backups").body["items"]:  # newest first
                admin.delete(f"/api/v1/backups/{backup['id']}")
            for target in admin.get("/api/v1/backup-targets").body["items"]:
                admin.delete(f"/api/v1/backup-targets/{target['id']}")
            _clean(admin, storage, pool_dir)


def raw_sha(volume: Path) -> str:
    """SHA-256 of a disk's guest-visible bytes (converted to a sparse raw file first)."""
    with tempfile.TemporaryDirectory(prefix="hvp-bk-raw-") as tmp:
        raw = Path(tmp) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(volume), str(raw)],
                       check=True, capture_output=True)
        with open(raw, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()


def disk_path(env: dict, vm: dict) -> Path:
    return env["pool_dir"] / vm["disks"][0]["volume"]


def backups_of(admin: Client, vm_id: str, target: str | None = None) -> list[dict]:
    query = f"?vm={vm_id}" + (f"&target={target}" if target else "")
    return admin.get(f"/api/v1/backups{query}").body["items"]


@pytest.mark.timeout(1500)
def test_backup_schedule_fault_incremental_and_restores(env: dict[str, Any]) -> None:
    admin, tag, ftp = env["admin"], env["tag"], env["ftp"]
    image = fast_image(CACHE)
    template = upload_template(admin, env["storage"], image.qcow2, image.index)
    vmt = admin.post("/api/v1/vm-templates", {"name": f"bk-{tag}", "memory_mib": 192,
                                              "vcpus": 1, "disk_gib": 1}).body
    task = admin.run("POST", "/api/v1/vms", {
        "name": f"bk-{tag}", "vm_template": vmt["id"], "storage": env["storage"]["id"],
        "os_template": template["id"], "interfaces": [ssh_nic(env)],
        "ssh_keys": [env["public"]], "start": True}, timeout=300)
    vm = admin.get(f"/api/v1/vms/{task['result']['vm']}").body
    _wait_ssh(env, vm)
    with login(env, vm) as client:
        assert sh(client, "dd if=/dev/urandom of=/root/data bs=1M count=32 2>/dev/null && "
                          "sync && sha256sum /root/data")[0] == 0
        data_sum = sh(client, "sha256sum /root/data")[1].split()[0]

    target = admin.post("/api/v1/backup-targets", {"name": f"ftp-{tag}", "backend": "ftp",
                                                    "options": ftp.options()})
    assert target.status == 201, target
    tid = target.body["id"]

    # 1. On a schedule, while the guest runs (and writes).
    schedule = admin.post("/api/v1/backup-schedules", {
        "name": f"every-minute-{tag}", "cron": "* * * * *", "target": tid,
        "vms": {"mode": "list", "ids": [vm["id"]]}, "full_every": 6}).body
    with login(env, vm) as client:
        client.exec_command("while [ ! -e /root/stop ]; do date >> /root/ticks; sync; "
                            "sleep 0.2; done")
        full = _wait_backup(admin, vm["id"], tid, timeout=90)
    admin.patch(f"/api/v1/backup-schedules/{schedule['id']}", {"paused": True})
    assert full["type"] == "full" and full["schedule"] == schedule["id"]
    assert full["data_bytes"] >= 32 * MIB and full["size"] < 1024 * MIB
    run = next(t for t in admin.get(f"/api/v1/tasks?subject={vm['id']}&limit=20").body["items"]
               if t["kind"] == "backup.vm")
    assert run["detail"]["bytes_total"] > 0 and "rate_bytes_per_s" in run["detail"]
    assert any("MiB/s" in line for line in run["log"])

    # 2. The FTP server dies in the middle of an upload: a clear failure, nothing listed.
    slow = env["slow"]
    slow_tid = admin.post("/api/v1/backup-targets", {"name": f"slow-{tag}", "backend": "ftp",
                                                      "options": slow.options(timeout=30)}).body["id"]
    resp = admin.post(f"/api/v1/vms/{vm['id']}/actions/backup", {"target": slow_tid,
                                                                 "mode": "full"})
    assert resp.status == 202, resp
    _wait_bytes(slow.home / "backups", 2 * MIB)
    slow.kill()
    failed = admin.wait_task(resp.body["task"]["id"], timeout=120)
    assert failed["state"] == "failed", failed
    assert "FTP" in failed["error"]["message"] and slow.password not in str(failed)
    assert backups_of(admin, vm["id"], slow_tid) == []
    slow.restart()
    retry = admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/backup",
                      {"target": slow_tid, "mode": "full"}, timeout=300)
    assert retry["result"]["type"] == "full"
    (kept,) = backups_of(admin, vm["id"], slow_tid)
    leftovers = [p.name for p in (slow.home / "backups" / f"vm-{vm['id']}").iterdir()]
    assert leftovers == [kept["archive"].split("/")[1]], leftovers  # no partial left
    assert admin.delete(f"/api/v1/backups/{kept['id']}").status == 204

    # 3. ~10% of the data changes: the incremental backup sends only that.
    with login(env, vm) as client:
        sh(client, "touch /root/stop; sleep 1")
        assert sh(client, "dd if=/dev/urandom of=/root/data bs=1M count=3 seek=8 conv=notrunc "
                          "2>/dev/null && sync")[0] == 0
        changed_sum = sh(client, "sha256sum /root/data")[1].split()[0]
    assert changed_sum != data_sum
    admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/stop", {"force": True}, timeout=120)
    before = raw_sha(disk_path(env, vm))
    inc = admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/backup",
                    {"target": tid, "mode": "auto"}, timeout=300)
    assert inc["result"]["type"] == "incremental", inc
    incremental = admin.get(f"/api/v1/backups/{inc['result']['backup']}").body
    assert incremental["parent"] == full["id"]
    assert incremental["data_bytes"] <= 0.25 * full["data_bytes"], (incremental, full)
    assert incremental["size"] <= 0.25 * full["size"]

    # 4. A tampered archive is refused and the VM's disk is left as it was.
    archive = ftp.home / "backups" / incremental["archive"]
    original = archive.read_bytes()
    spot = len(original) // 3
    archive.write_bytes(original[:spot] + bytes([original[spot] ^ 0xFF]) + original[spot + 1:])
    bad = admin.run("POST", f"/api/v1/backups/{incremental['id']}/actions/restore",
                    {"mode": "replace"}, expect="failed", timeout=300)
    assert bad["error"]["code"] in ("archive_damaged", "backup_damaged"), bad["error"]
    assert admin.get(f"/api/v1/vms/{vm['id']}").body["disks"] == vm["disks"]
    assert raw_sha(disk_path(env, vm)) == before
    admin.run("POST", f"/api/v1/backups/{incremental['id']}/actions/verify", {},
              expect="failed", timeout=300)
    archive.write_bytes(original)

    # 5. Restore in place: byte-identical, and the VM boots with its data.
    admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/start", timeout=120)
    _wait_ssh(env, vm)
    with login(env, vm) as client:
        sh(client, "rm -f /root/data && echo junk > /root/junk && sync")
    restored = admin.run("POST", f"/api/v1/backups/{incremental['id']}/actions/restore",
                         {"mode": "replace", "start": False}, timeout=600)
    after = admin.get(f"/api/v1/vms/{vm['id']}").body
    assert after["disks"][0]["volume"] != vm["disks"][0]["volume"]
    assert not disk_path(env, vm).exists()  # the old volume went only after the swap
    assert raw_sha(disk_path(env, after)) == before
    assert restored["result"]["backup"] == incremental["id"]
    admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/start", timeout=120)
    _wait_ssh(env, after)
    with login(env, after) as client:
        assert sh(client, "sha256sum /root/data")[1].split()[0] == changed_sum
        assert sh(client, "test -e /root/junk; echo $?")[1] == "1\n"

    # 6. Restore the full backup as a new VM.
    new = admin.run("POST", f"/api/v1/backups/{full['id']}/actions/restore",
                    {"mode": "new", "name": f"bk-copy-{tag}", "start": False}, timeout=600)
    copy = admin.get(f"/api/v1/vms/{new['result']['vm']}").body
    assert copy["name"] == f"bk-copy-{tag}" and copy["state"] == "stopped"
    assert disk_path(env, copy).exists()
    assert_error_free_delete(admin, full, incremental)


def assert_error_free_delete(admin: Client, full: dict, incremental: dict) -> None:
    """A full backup cannot go while an incremental builds on it; children first works."""
    refused = admin.delete(f"/api/v1/backups/{full['id']}")
    assert refused.status == 409 and refused.body["error"]["code"] == "backup_in_use"
    assert admin.delete(f"/api/v1/backups/{incremental['id']}").status == 204
    assert admin.delete(f"/api/v1/backups/{full['id']}").status == 204


def _wait_backup(admin: Client, vm_id: str, target: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = backups_of(admin, vm_id, target)
        if found:
            return found[0]
        time.sleep(1)
    tasks = admin.get("/api/v1/tasks?limit=10").body["items"]
    raise AssertionError(f"no scheduled backup within {timeout} s; tasks: {tasks}")


def _wait_bytes(folder: Path, size: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) \
            if folder.exists() else 0
        if total >= size:
            return
        time.sleep(0.1)
    raise AssertionError(f"the upload never reached {size} bytes in {folder}")
