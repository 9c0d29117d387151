"""End to end on the real libvirtd: a TCG guest created, booted, stopped and deleted via the API.

The guest is a Debian kernel with a busybox initramfs built at test time; it prints a marker
on its serial console, and powers off on an ACPI power-button press.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.support.client import Client
from tests.support.guest import MARKER, UPTIME_PREFIX, build_guest_assets
from tests.support.realvirt import REPO_ROOT, ensure_libvirtd, served_panel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    uri = ensure_libvirtd()
    assets = build_guest_assets(REPO_ROOT / ".cache" / "guest")
    with served_panel(tmp_path_factory.mktemp("real") / "data", uri) as (panel, admin):
        tag = uuid.uuid4().hex[:6]
        pool_dir = f"/var/lib/libvirt/images/hvp-test-{tag}"
        storage = admin.post("/api/v1/storages", {"name": f"test-{tag}", "backend": "dir",
                                                  "options": {"path": pool_dir}})
        assert storage.status == 201, storage
        template = admin.post("/api/v1/vm-templates", {"name": "tiny", "memory_mib": 128,
                                                       "vcpus": 1, "disk_gib": 1})
        assert template.status == 201, template
        raw = libvirt.open(uri)
        yield {"admin": admin, "panel": panel, "assets": assets, "tag": tag, "raw": raw,
               "storage": storage.body, "template": template.body, "pool_dir": pool_dir}
        for vm in admin.get("/api/v1/vms").body["items"]:
            admin.delete(f"/api/v1/vms/{vm['id']}")
        deadline = time.monotonic() + 30
        while admin.get("/api/v1/vms").body["items"] and time.monotonic() < deadline:
            time.sleep(0.2)
        admin.delete(f"/api/v1/storages/{storage.body['id']}")
    raw.close()
    if Path(pool_dir).exists():
        Path(pool_dir).rmdir()


def create_guest(real: dict, name: str, start: bool = True) -> dict:
    admin: Client = real["admin"]
    assets = real["assets"]
    task = admin.run("POST", "/api/v1/vms", {
        "name": name,
        "vm_template": real["template"]["id"],
        "storage": real["storage"]["id"],
        "boot": {"kernel": str(assets.kernel), "initrd": str(assets.initrd),
                 "cmdline": "console=ttyS0 quiet"},
        "start": start,
    }, timeout=180)
    return admin.get(f"/api/v1/vms/{task['result']['vm']}").body


def wait_console(admin: Client, vm_id: str, text: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    console = ""
    while time.monotonic() < deadline:
        console = admin.get(f"/api/v1/vms/{vm_id}/console").body["text"]
        if text in console:
            return console
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared on the console:\n{console[-2000:]}")


def wait_state(admin: Client, vm_id: str, state: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        vm = admin.get(f"/api/v1/vms/{vm_id}").body
        if vm["state"] == state or time.monotonic() > deadline:
            assert vm["state"] == state, vm
            return vm
        time.sleep(0.2)


def test_real_guest_boots_stops_and_is_deleted_through_the_api(real: dict):
    admin: Client = real["admin"]
    raw: libvirt.virConnect = real["raw"]
    name = f"guest-{real['tag']}"
    vm = create_guest(real, name)
    assert vm["state"] == "running"
    assert vm["domain_type"] == "qemu"  # this host's libvirt offers TCG only

    dom = raw.lookupByName(name)
    assert dom.isActive()
    xml = dom.XMLDesc()
    assert "<shares>1024</shares>" in xml and "type=\"qemu\"" in xml.splitlines()[0].replace("'", '"')
    pool = raw.storagePoolLookupByName(f"hvp-test-{real['tag']}")
    volume = pool.storageVolLookupByName(f"{name}-disk0.qcow2")
    assert volume.info()[1] == 1024**3

    console = wait_console(admin, vm["id"], MARKER)
    assert MARKER in console
    wait_console(admin, vm["id"], f"{UPTIME_PREFIX} 2")

    task = admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/stop", {"timeout": 30})
    assert task["result"] == {"forced": False}  # the guest honoured the ACPI power button
    wait_state(admin, vm["id"], "stopped")
    assert not dom.isActive()

    admin.run("DELETE", f"/api/v1/vms/{vm['id']}")
    with pytest.raises(libvirt.libvirtError):
        raw.lookupByName(name)
    pool.refresh()
    assert f"{name}-disk0.qcow2" not in pool.listVolumes()


def test_domain_removed_outside_the_panel_is_shown_as_missing(real: dict):
    admin: Client = real["admin"]
    raw: libvirt.virConnect = real["raw"]
    name = f"outside-{real['tag']}"
    vm = create_guest(real, name, start=False)
    assert vm["state"] == "stopped"
    raw.lookupByName(name).undefine()  # someone uses virsh behind the panel's back
    missing = wait_state(admin, vm["id"], "missing")
    assert "outside" in missing["problem"]
    assert admin.get("/api/v1/vms").status == 200  # the list still works
    start = admin.post(f"/api/v1/vms/{vm['id']}/actions/start")
    assert start.status == 409 and start.body["error"]["code"] == "domain_missing"
    admin.run("DELETE", f"/api/v1/vms/{vm['id']}")  # cleans up the record and the disk
    assert admin.get(f"/api/v1/vms/{vm['id']}").status == 404


def test_second_start_of_a_running_real_guest_is_refused(real: dict):
    admin: Client = real["admin"]
    vm = create_guest(real, f"twice-{real['tag']}")
    again = admin.post(f"/api/v1/vms/{vm['id']}/actions/start")
    assert again.status == 409 and again.body["error"]["code"] == "invalid_state"
    admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/destroy")
    wait_state(admin, vm["id"], "stopped")
    admin.run("DELETE", f"/api/v1/vms/{vm['id']}")
