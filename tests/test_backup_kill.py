"""The panel is SIGKILLed in the middle of a VM backup (``python app.py serve`` on the real
libvirtd, a throttled real FTP server): after a restart the task is failed with code
``interrupted``, the target lists no archive (the half-written one is only a temporary
file, removed by the next backup of that VM), no backup job or checkpoint blocks the VM, and
the next backup of it succeeds.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.support.client import Client
from tests.support.ftpserver import FtpServer
from tests.support.realvirt import ensure_libvirtd
from tests.test_signals import Served

pytestmark = pytest.mark.slow
MIB = 1024 * 1024
DEFAULT_POOL_DIR = Path("/var/lib/libvirt/images/hvp")


def _login(server: Served) -> Client:
    server.wait_serving(60)
    return Client(f"http://127.0.0.1:{server.port}").login("admin", ADMIN_PASSWORD)


@pytest.mark.timeout(600)
def test_a_backup_cut_by_sigkill_leaves_nothing_listed_and_the_next_one_works(
        tmp_path: Path) -> None:
    uri = ensure_libvirtd()
    tag = uuid.uuid4().hex[:6]
    data = tmp_path / "data"
    pool = Path(f"/var/lib/libvirt/images/hvp-kill-{tag}")
    with FtpServer(tmp_path / "ftp", upload_rate=2 * MIB) as ftp:
        server = Served(data, uri)
        admin = _login(server)
        storage = admin.post("/api/v1/storages", {"name": f"kill-{tag}", "backend": "dir",
                                                  "options": {"path": str(pool)}}).body
        template = admin.post("/api/v1/vm-templates", {"name": f"kill-{tag}", "memory_mib": 64,
                                                       "vcpus": 1, "disk_gib": 1}).body
        vm_id = admin.run("POST", "/api/v1/vms", {"name": f"kill-{tag}",
                                                  "vm_template": template["id"],
                                                  "storage": storage["id"]})["result"]["vm"]
        vm = admin.get(f"/api/v1/vms/{vm_id}").body
        volume = pool / vm["disks"][0]["volume"]
        random = tmp_path / "random.bin"
        random.write_bytes(os.urandom(48 * MIB))
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -q -s {random} 0 48M",
                        str(volume)], check=True, capture_output=True)
        target = admin.post("/api/v1/backup-targets", {"name": "ftp", "backend": "ftp",
                                                        "options": ftp.options()}).body["id"]
        admin.run("POST", f"/api/v1/vms/{vm_id}/actions/start")
        task = admin.post(f"/api/v1/vms/{vm_id}/actions/backup",
                          {"target": target, "mode": "full"}).body["task"]
        folder = ftp.home / "backups" / f"vm-{vm_id}"
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 4 * MIB for p in folder.glob(".partial-*")):
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.1)
        server.kill()  # SIGKILL in the middle of the upload

        server = Served(data, uri)
        try:
            admin = _login(server)
            cut = admin.get(f"/api/v1/tasks/{task['id']}").body
            assert cut["state"] == "failed" and cut["error"]["code"] == "interrupted", cut
            assert admin.get(f"/api/v1/backups?vm={vm_id}").body["items"] == []
            listed = admin.get(f"/api/v1/backup-targets/{target}/archives").body["items"]
            assert listed == []  # the partial file is not an archive
            assert list(folder.glob(".partial-*"))  # it is there, but only as a partial
            done = admin.run("POST", f"/api/v1/vms/{vm_id}/actions/backup",
                             {"target": target, "mode": "auto"}, timeout=300)
            assert done["result"]["type"] == "full"
            assert not list(folder.glob(".partial-*"))  # the leftover was removed
            assert any("interrupted" in line or "unfinished" in line or "left behind" in line
                       for line in done["log"]), done["log"]
            (backup,) = admin.get(f"/api/v1/backups?vm={vm_id}").body["items"]
            assert admin.post(f"/api/v1/backups/{backup['id']}/actions/verify",
                              {}).status == 202
            inc = admin.run("POST", f"/api/v1/vms/{vm_id}/actions/backup",
                            {"target": target, "mode": "incremental"}, timeout=300)
            assert inc["result"]["type"] == "incremental", inc["result"]
        finally:
            try:
                for item in admin.get(f"/api/v1/backups?vm={vm_id}").body["items"]:
                    admin.delete(f"/api/v1/backups/{item['id']}")
                admin.delete(f"/api/v1/backup-targets/{target}")
                admin.run("POST", f"/api/v1/vms/{vm_id}/actions/destroy", expect="succeeded")
                admin.run("DELETE", f"/api/v1/vms/{vm_id}")
                # Also the `default` storage `app.py serve` makes at its first start on a
                # real libvirtd (/var/lib/libvirt/images/hvp, pool hvp-default).
                for made in admin.get("/api/v1/storages").body["items"]:
                    assert admin.delete(f"/api/v1/storages/{made['id']}").status == 204
            finally:
                server.kill()
                subprocess.run(["rm", "-rf", str(pool)], check=False)
                with contextlib.suppress(OSError):
                    DEFAULT_POOL_DIR.rmdir()  # only when empty: never another's images
