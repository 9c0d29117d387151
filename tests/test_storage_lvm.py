"""The ``lvm`` and ``network_lvm`` storage back ends.

Two tiers (see ENVIRONMENT.md: this kernel has no device-mapper):
- REAL (``..._real``): the system libvirtd (qemu:///system) and real lvm2 on a loop device:
  libvirt builds the volume group (pvcreate + vgcreate), starts and stops the pool, reports
  its capacity; creating a logical volume then fails (no device-mapper), and the test proves
  the failure is clear and leaves nothing behind.
- TEST DRIVER (``..._on_test_driver``): everything that needs logical volumes (VM disks,
  snapshot clones, space checks) on libvirt's test driver, plus libvirt's XML schemas.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from hypervisor_panel_plugins.storage_lvm.backend import (
    LVMStorage,
    NetworkLVMStorage,
    cow_size,
    lvm_reason,
)

from hypervisor_panel.panel import Panel
from hypervisor_panel.storage import GIB
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.server import serve_in_thread
from tests.conftest import ADMIN_PASSWORD
from tests.support.api import assert_error, snapshot
from tests.support.client import Client
from tests.support.realvirt import ensure_libvirtd

LOOP_SIZE = 2 * GIB  # sparse: room for a 1 GiB LV, costs a few KiB of disk
LVM_ENV = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}
TEST_VG = "testvg1"  # the test driver's findStoragePoolSources knows testvg1 and testvg2


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """An lvm2/util-linux command as an argument list (never a shell)."""
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check,
                          env=LVM_ENV, timeout=60)


def new_loop_device(image: Path, size: int) -> str:
    with open(image, "wb") as fh:
        fh.truncate(size)
    return run("losetup", "-f", "--show", str(image)).stdout.strip()


def remove_loop_device(loop: str, vg: str | None = None) -> None:
    """Undo everything LVM may have put on ``loop``; every step runs whatever failed before."""
    if vg and run("vgs", vg, check=False).returncode == 0:
        run("vgremove", "-f", vg, check=False)
    run("pvremove", "-ff", "-y", loop, check=False)
    run("losetup", "-d", loop, check=False)


def undefine_pool(conn: libvirt.virConnect, name: str) -> None:
    """Remove a pool a failed test may have left (by name: other pools are not touched)."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        return
    if pool.isActive():
        pool.destroy()
    pool.undefine()


def lvs(vg: str) -> list[str]:
    out = run("lvs", "--noheadings", "-o", "lv_name", vg).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def records(admin: Client) -> dict:
    """What a refused storage request must leave as it was: which records exist and how
    the storages are defined. Not the figures the panel refreshes in the background (a
    node's free memory, domain counts and kvm verdict; capacity on a shared libvirtd)."""
    view: dict = {name: sorted(item["id"] for item in admin.get(f"/api/v1/{name}").body["items"])
                  for name in ("vms", "vm-templates", "nodes", "users")}
    storages = admin.get("/api/v1/storages").body["items"]
    view["storages"] = sorted(([s["id"], s["name"], s["backend"], s["options"]]
                               for s in storages), key=lambda s: s[0])
    return view


def pools_using(conn: libvirt.virConnect, vg: str) -> list[str]:
    """The node's libvirt pools (by any name) on volume group ``vg``."""
    found = []
    for pool in conn.listAllStoragePools(0):
        with contextlib.suppress(libvirt.libvirtError):  # another test's pool, gone since
            if ET.fromstring(pool.XMLDesc(0)).findtext("source/name") == vg:  # noqa: S314
                found.append(pool.name())
    return found


def validate_xml(xml: str, kind: str, tmp_path: Path) -> None:
    assert shutil.which("virt-xml-validate"), "virt-xml-validate (libvirt-clients) is missing"
    path = tmp_path / f"{kind}-{uuid.uuid4().hex[:6]}.xml"
    path.write_text(xml)
    proc = subprocess.run(["virt-xml-validate", str(path), kind], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout + xml


# -- real libvirtd + real lvm2 --------------------------------------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A panel on the real libvirtd with only this plugin loaded and no default storage."""
    for tool in ("losetup", "pvcreate", "vgs"):
        assert shutil.which(tool), f"{tool} is missing: apt-get install lvm2"
    uri = ensure_libvirtd()
    panel = Panel(tmp_path_factory.mktemp("lvm-real") / "data", local_uri=uri,
                  default_storage_path=None, plugins=["storage_lvm"])
    panel.start(admin_password=ADMIN_PASSWORD)
    srv, port = serve_in_thread(create_app(panel))
    admin = Client(f"http://127.0.0.1:{port}").login("admin", ADMIN_PASSWORD)
    raw = libvirt.open(uri)
    try:
        yield {"admin": admin, "panel": panel, "raw": raw,
               "node": admin.get("/api/v1/nodes").body["items"][0]}
    finally:
        for storage in admin.get("/api/v1/storages").body["items"]:
            admin.delete(f"/api/v1/storages/{storage['id']}")
        srv.stop()
        panel.close()
        raw.close()


@pytest.fixture
def loop_vg(real: dict, tmp_path: Path) -> Iterator[dict]:
    """A fresh 2 GiB sparse loop device and a unique VG name; all of it removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    vg = f"hvptest{tag}"
    loop = new_loop_device(tmp_path / "pv.img", LOOP_SIZE)
    try:
        yield {"loop": loop, "vg": vg, "tag": tag}
    finally:
        undefine_pool(real["raw"], f"hvp-lvm-{tag}")
        remove_loop_device(loop, vg)


@pytest.mark.slow  # real lvm2 and the real libvirtd
def test_lvm_storage_builds_a_real_vg_and_lv_creation_fails_cleanly_real(real: dict,
                                                                         loop_vg: dict):
    assert "device-mapper" not in Path("/proc/misc").read_text(), (
        "this host has device-mapper: logical volumes can be created for real here, so "
        "this test should now create, clone and delete them instead of expecting a failure")
    admin: Client = real["admin"]
    raw: libvirt.virConnect = real["raw"]
    vg, loop, tag = loop_vg["vg"], loop_vg["loop"], loop_vg["tag"]
    created = admin.post("/api/v1/storages", {"name": f"lvm-{tag}", "backend": "lvm",
                                              "options": {"vg_name": vg, "devices": [loop]}})
    assert created.status == 201, created
    storage = created.body
    assert storage["shared"] is False
    # libvirt ran pvcreate + vgcreate: lvm2 itself sees the group on the loop device.
    pvs = run("pvs", "--noheadings", "-o", "pv_name,vg_name", loop).stdout.split()
    assert pvs == [loop, vg]
    pool = raw.storagePoolLookupByName(f"hvp-lvm-{tag}")
    assert pool.isActive() and pool.autostart()

    listed = {s["id"]: s for s in admin.get("/api/v1/storages").body["items"]}
    on_node = listed[storage["id"]]["nodes"][real["node"]["id"]]
    assert on_node["state"] == "active", on_node
    # LVM keeps 1 MiB of metadata and rounds to 4 MiB extents.
    assert LOOP_SIZE - 8 * 1024**2 <= on_node["capacity"] <= LOOP_SIZE, on_node
    assert on_node["available"] == on_node["capacity"]

    # No device-mapper: lvcreate fails; the task says why, on one line, and nothing stays.
    task = admin.run("POST", f"/api/v1/storages/{storage['id']}/volumes",
                     {"name": "disk1", "size_gib": 1}, expect="failed")
    error = task["error"]
    assert error["code"] == "lvm_failed", error
    assert error["message"].startswith(
        f"cannot create logical volume disk1 in volume group {vg!r}: the node's kernel has "
        "no device-mapper support"), error
    assert "Failure to communicate with kernel device-mapper driver" in error["message"]
    assert "\n" not in error["message"]

    template = admin.post("/api/v1/vm-templates", {"name": f"lvm-{tag}", "memory_mib": 64,
                                                   "vcpus": 1, "disk_gib": 1})
    assert template.status == 201, template
    task = admin.run("POST", "/api/v1/vms", {"name": f"lvmvm-{tag}",
                                             "vm_template": template.body["id"],
                                             "storage": storage["id"]}, expect="failed")
    assert task["error"]["code"] == "lvm_failed", task
    assert "device-mapper" in task["error"]["message"]
    assert admin.get("/api/v1/vms").body["items"] == []
    with pytest.raises(libvirt.libvirtError):
        raw.lookupByName(f"lvmvm-{tag}")
    assert lvs(vg) == []
    pool.refresh(0)
    assert pool.listVolumes() == []
    assert admin.delete(f"/api/v1/vm-templates/{template.body['id']}").status == 204

    # Deleting the storage stops and undefines the pool; the VG (the data) stays.
    assert admin.delete(f"/api/v1/storages/{storage['id']}").status == 204
    with pytest.raises(libvirt.libvirtError):
        raw.storagePoolLookupByName(f"hvp-lvm-{tag}")
    assert run("vgs", vg, check=False).returncode == 0

    # Added again, the panel adopts the VG it finds on the same device (no second build).
    again = admin.post("/api/v1/storages", {"name": f"lvm-{tag}", "backend": "lvm",
                                            "options": {"vg_name": vg, "devices": [loop]}})
    assert again.status == 201, again
    # ... but another VG on a device that is already a PV is refused before libvirt runs.
    before = records(admin)
    clash = admin.post("/api/v1/storages", {"name": f"other-{tag}", "backend": "lvm",
                                            "options": {"vg_name": f"{vg}x",
                                                        "devices": [loop]}})
    assert_error(clash, 409, "device_in_use")
    assert vg in clash.body["error"]["message"]
    assert records(admin) == before
    assert pools_using(raw, f"{vg}x") == []
    assert run("pvs", "--noheadings", "-o", "vg_name", loop).stdout.split() == [vg]
    assert admin.delete(f"/api/v1/storages/{again.body['id']}").status == 204


@pytest.mark.slow  # real lvm2 and the real libvirtd
def test_lvm_build_never_overwrites_a_device_holding_data_real(real: dict, tmp_path: Path):
    admin: Client = real["admin"]
    tag = uuid.uuid4().hex[:8]
    loop = new_loop_device(tmp_path / "fs.img", 64 * 1024**2)
    try:
        run("mkfs.ext4", "-q", "-F", loop)
        before = records(admin)
        resp = admin.post("/api/v1/storages", {"name": f"data-{tag}", "backend": "lvm",
                                               "options": {"vg_name": f"hvpdata{tag}",
                                                           "devices": [loop]}})
        assert_error(resp, 422, "device_not_empty")
        message = resp.body["error"]["message"]
        assert message.startswith(f"cannot create volume group 'hvpdata{tag}' on {loop} on "
                                  "node "), message
        assert "forced overwrite is necessary" in message  # libvirt's own reason
        assert "never overwrites a device that holds data" in message
        assert records(admin) == before
        assert pools_using(real["raw"], f"hvpdata{tag}") == []
        with pytest.raises(libvirt.libvirtError):
            real["raw"].storagePoolLookupByName(f"hvp-data-{tag}")
        assert run("blkid", "-o", "value", "-s", "TYPE", loop).stdout.strip() == "ext4"
    finally:
        undefine_pool(real["raw"], f"hvp-data-{tag}")
        remove_loop_device(loop, f"hvpdata{tag}")


@pytest.mark.slow  # real lvm2 and the real libvirtd
def test_lvm_storage_on_a_missing_vg_is_refused_clearly_real(real: dict):
    admin: Client = real["admin"]
    tag = uuid.uuid4().hex[:8]
    vg = f"hvpnone{tag}"
    before = records(admin)
    resp = admin.post("/api/v1/storages", {"name": f"nope-{tag}", "backend": "lvm",
                                           "options": {"vg_name": vg}})
    assert_error(resp, 422, "vg_not_found")
    assert resp.body["error"]["message"].startswith(
        f"volume group '{vg}' does not exist on node ")
    # No storage record, no pool on the node (by any name), no volume group made.
    assert records(admin) == before
    assert pools_using(real["raw"], vg) == []
    with pytest.raises(libvirt.libvirtError):
        real["raw"].storagePoolLookupByName(f"hvp-nope-{tag}")
    assert run("vgs", vg, check=False).returncode != 0


# -- pure parts and the test driver --------------------------------------------------------
def test_pool_and_volume_xml_validate_against_libvirt_schemas_on_test_driver(
        tmp_path: Path):
    built = LVMStorage({"name": "fast", "options": {"vg_name": "vg0",
                                                    "devices": ["/dev/sdb", "/dev/sdc"]}})
    assert built.pool_xml() == (
        "<pool type=\"logical\"><name>hvp-fast</name><source><device path=\"/dev/sdb\" />"
        "<device path=\"/dev/sdc\" /><name>vg0</name><format type=\"lvm2\" /></source>"
        "<target><path>/dev/vg0</path></target></pool>")
    existing = LVMStorage({"name": "old", "options": {"vg_name": "vg1"}})
    shared = NetworkLVMStorage({"name": "san", "options": {"vg_name": "san_vg"}})
    assert built.build_flags == libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE
    assert existing.build_flags is None and shared.build_flags is None
    assert "<device" not in existing.pool_xml() and "<device" not in shared.pool_xml()
    node = tmp_path / "node.xml"
    shutil.copyfile(Path(__file__).parent / "data" / "test-node.xml", node)
    conn = libvirt.open(f"test://{node}")
    try:
        for backend in (built, existing, shared):
            validate_xml(backend.pool_xml(), "storagepool", tmp_path)
            conn.storagePoolDefineXML(backend.pool_xml(), 0).undefine()
        pool = conn.storagePoolDefineXML(existing.pool_xml(), 0)
        pool.create(0)
        volume_xml = existing.volume_xml("web-disk0", GIB)
        assert "<allocation unit=\"bytes\">1073741824</allocation>" in volume_xml
        assert "<format" not in volume_xml  # an LV has no image format
        validate_xml(volume_xml, "storagevol", tmp_path)
        base = pool.createXML(volume_xml, 0)
        clone_xml = existing.clone_xml("web2-disk0", GIB, base)
        assert "<target /><backingStore><path>/dev/vg1/web-disk0</path></backingStore>" in clone_xml
        validate_xml(clone_xml, "storagevol", tmp_path)
    finally:
        conn.close()


def test_lvm_errors_are_condensed_to_their_reason():
    message = ("internal error: Child process (/sbin/lvcreate --name v1 -L 8192K vg --yes) "
               "unexpected exit status 3:   /dev/mapper/control: open failed: No such device\n"
               "  Failure to communicate with kernel device-mapper driver.\n"
               "  Run `lvcreate --help' for more information.\n")
    assert lvm_reason(message) == (
        "the node's kernel has no device-mapper support, which every logical volume needs "
        "(load the dm_mod module) — lvm says: /dev/mapper/control: open failed: No such "
        "device; Failure to communicate with kernel device-mapper driver")
    assert lvm_reason("Volume group \"vg\" has insufficient free space") == (
        "Volume group \"vg\" has insufficient free space")
    assert cow_size(GIB) == GIB + GIB // 128 + 4 * 1024**2


def lvm_storage(admin: Client, name: str = "fast", vg: str = TEST_VG) -> dict:
    resp = admin.post("/api/v1/storages", {"name": name, "backend": "lvm",
                                           "options": {"vg_name": vg}})
    assert resp.status == 201, resp
    return resp.body


def node_conn(admin: Client, panel: Panel) -> libvirt.virConnect:
    node = admin.get("/api/v1/nodes").body["items"][0]
    return panel.nodes.connection(node["id"]).get()


def test_vm_on_lvm_storage_gets_a_raw_block_disk_on_test_driver(admin: Client, panel: Panel,
                                                               tmp_path: Path):
    storage = lvm_storage(admin)
    small = next(t for t in admin.get("/api/v1/vm-templates").body["items"]
                 if t["name"] == "small")
    task = admin.run("POST", "/api/v1/vms", {"name": "db1", "vm_template": small["id"],
                                             "storage": storage["id"]})
    vm = admin.get(f"/api/v1/vms/{task['result']['vm']}").body
    assert vm["disks"][0]["volume"] == "db1-disk0"
    conn = node_conn(admin, panel)
    xml = conn.lookupByName("db1").XMLDesc(0)
    validate_xml(xml, "domain", tmp_path)
    disk = ET.fromstring(xml).find("devices/disk")  # noqa: S314 - libvirt's XML
    assert disk.get("type") == "block"
    assert disk.find("source").attrib == {"dev": f"/dev/{TEST_VG}/db1-disk0"}
    assert disk.find("driver").get("type") == "raw"
    volumes = admin.get(f"/api/v1/storages/{storage['id']}/volumes").body["items"]
    assert [(v["name"], v["capacity"], v["used_by"]) for v in volumes] == [
        ("db1-disk0", small["disk_gib"] * GIB, ["db1"])]
    admin.run("DELETE", f"/api/v1/vms/{vm['id']}")
    assert admin.get(f"/api/v1/storages/{storage['id']}/volumes").body["items"] == []


def test_clones_are_lvm_snapshots_on_test_driver(admin: Client, panel: Panel):
    storage = lvm_storage(admin)
    vols = f"/api/v1/storages/{storage['id']}/volumes"
    admin.run("POST", vols, {"name": "base", "size_gib": 1})
    task = admin.run("POST", vols, {"name": "snap", "clone_from": "base"})
    assert task["result"]["capacity"] >= GIB
    pool = node_conn(admin, panel).storagePoolLookupByName("hvp-fast")
    snap = ET.fromstring(pool.storageVolLookupByName("snap").XMLDesc(0))  # noqa: S314
    assert snap.findtext("backingStore/path") == f"/dev/{TEST_VG}/base"
    # The COW area is reserved in full: a snapshot costs its whole capacity, plus overhead.
    assert pool.info()[2] == GIB + cow_size(GIB)
    # lvremove -f on an origin would take its snapshots along: refused.
    assert_error(admin.delete(f"{vols}/base"), 409, "volume_has_snapshots")
    # A clone larger than its origin cannot be a snapshot: a full copy into a bigger LV.
    task = admin.run("POST", vols, {"name": "big", "clone_from": "base", "size_gib": 2})
    assert task["result"]["capacity"] == 2 * GIB
    big = ET.fromstring(pool.storageVolLookupByName("big").XMLDesc(0))  # noqa: S314
    assert big.find("backingStore") is None
    # Classic LVM has no snapshot of a snapshot: a full copy.
    admin.run("POST", vols, {"name": "snap2", "clone_from": "snap"})
    snap2 = ET.fromstring(pool.storageVolLookupByName("snap2").XMLDesc(0))  # noqa: S314
    assert snap2.find("backingStore") is None
    for name in ("snap2", "snap", "big", "base"):
        assert admin.delete(f"{vols}/{name}").status == 204
    assert admin.get(vols).body["items"] == []
    # Names lvcreate would refuse are refused first, with LVM's rule in the message.
    task = admin.run("POST", vols, {"name": "snapshot1", "size_gib": 1}, expect="failed")
    assert task["error"]["code"] == "invalid_volume_name", task
    # An LV is a raw block device: no qcow2 inside.
    task = admin.run("POST", vols, {"name": "q", "size_gib": 1, "format": "qcow2"},
                     expect="failed")
    assert task["error"]["code"] == "unsupported_format", task
    assert admin.get(vols).body["items"] == []


def test_a_disk_larger_than_the_vg_fails_with_no_space_on_test_driver(admin: Client,
                                                                       panel: Panel):
    storage = lvm_storage(admin)
    pool = node_conn(admin, panel).storagePoolLookupByName("hvp-fast")
    available = pool.info()[3]  # the test driver's pools hold 100 GiB
    huge = admin.post("/api/v1/vm-templates", {"name": "huge", "memory_mib": 512, "vcpus": 1,
                                               "disk_gib": available // GIB + 1})
    assert huge.status == 201, huge
    task = admin.run("POST", "/api/v1/vms", {"name": "big1", "vm_template": huge.body["id"],
                                             "storage": storage["id"]}, expect="failed")
    assert task["error"]["code"] == "no_space", task
    assert task["error"]["message"] == (f"{(available // GIB + 1):.1f} GiB does not fit in "
                                        f"storage 'fast' ({available / GIB:.1f} GiB free)")
    assert admin.get("/api/v1/vms").body["items"] == []
    assert pool.listVolumes() == []
    with pytest.raises(libvirt.libvirtError):
        node_conn(admin, panel).lookupByName("big1")
    # A snapshot's COW area counts too (the core skips the check for copy-on-write clones).
    vols = f"/api/v1/storages/{storage['id']}/volumes"
    admin.run("POST", vols, {"name": "half", "size_gib": available // GIB // 2 + 1})
    task = admin.run("POST", vols, {"name": "half2", "clone_from": "half"}, expect="failed")
    assert task["error"]["code"] == "no_space", task
    assert "copy-on-write area" in task["error"]["message"]
    assert sorted(pool.listVolumes()) == ["half"]


def test_network_lvm_is_shared_and_never_built_on_test_driver(admin: Client, panel: Panel):
    backends = {b["name"]: b for b in admin.get("/api/v1/storage-backends").body["items"]}
    assert backends["network_lvm"]["shared"] is True
    assert backends["lvm"]["shared"] is False
    assert "lvmlockd" in backends["network_lvm"]["description"]
    assert "devices" not in backends["network_lvm"]["options_schema"]["properties"]
    assert "devices" in backends["lvm"]["options_schema"]["properties"]
    before = snapshot(admin)
    refused = admin.post("/api/v1/storages", {"name": "san", "backend": "network_lvm",
                                              "options": {"vg_name": "testvg2",
                                                          "devices": ["/dev/sdb"]}})
    assert_error(refused, 422, "validation_error")
    assert snapshot(admin) == before
    with pytest.raises(libvirt.libvirtError):
        node_conn(admin, panel).storagePoolLookupByName("hvp-san")
    created = admin.post("/api/v1/storages", {"name": "san", "backend": "network_lvm",
                                              "options": {"vg_name": "testvg2"}})
    assert created.status == 201, created
    assert created.body["shared"] is True
    missing = admin.post("/api/v1/storages", {"name": "san2", "backend": "network_lvm",
                                              "options": {"vg_name": "absent"}})
    assert_error(missing, 422, "vg_not_found")
    assert "lvmlockd" in missing.body["error"]["message"]


def test_bad_lvm_storages_are_refused_and_change_nothing_on_test_driver(admin: Client,
                                                                         panel: Panel):
    lvm_storage(admin)
    before = snapshot(admin)
    for body, status, code in [
        ({"name": "fast", "backend": "lvm", "options": {"vg_name": TEST_VG}}, 409,
         "already_exists"),
        ({"name": "s", "backend": "lvm", "options": {}}, 422, "validation_error"),
        ({"name": "s", "backend": "lvm", "options": {"vg_name": "-vg"}}, 422,
         "validation_error"),
        ({"name": "s", "backend": "lvm", "options": {"vg_name": "a/b"}}, 422,
         "validation_error"),
        ({"name": "s", "backend": "lvm", "options": {"vg_name": ".."}}, 422,
         "validation_error"),
        ({"name": "s", "backend": "lvm", "options": {"vg_name": "vg", "devices": []}}, 422,
         "validation_error"),
        ({"name": "s", "backend": "lvm",
          "options": {"vg_name": "vg", "devices": ["sdb"]}}, 422, "validation_error"),
        ({"name": "s", "backend": "lvm",
          "options": {"vg_name": "vg", "devices": ["/dev/../etc/passwd"]}}, 422,
         "validation_error"),
        ({"name": "s", "backend": "lvm",
          "options": {"vg_name": "vg", "devices": ["/dev/sdb", "/dev/sdb"]}}, 422,
         "validation_error"),
        ({"name": "s", "backend": "lvm", "options": {"vg_name": "absent"}}, 422,
         "vg_not_found"),
        # The test driver's testvg2 lives on /dev/sda21: not the devices given.
        ({"name": "s", "backend": "lvm",
          "options": {"vg_name": "testvg2", "devices": ["/dev/sdb"]}}, 409, "vg_exists"),
    ]:
        assert_error(admin.post("/api/v1/storages", body), status, code)
    assert snapshot(admin) == before
    pools = node_conn(admin, panel).listAllStoragePools(0)
    assert sorted(p.name() for p in pools) == ["hvp-default", "hvp-fast"]
