"""The ``nfs`` storage back end.

What is real and what is not: this machine's kernel has no NFS client, so no libvirt netfs
pool can mount here. The NFS server is real (nfs-ganesha, NFSv4 only, started by
``scripts/services/nfs-ganesha.sh``): the reachability check talks to it, and libnfs-utils
move real qcow2 images through it. The pools, volumes and domains live on libvirt's test
driver (``..._on_test_driver``), which accepts netfs pools without mounting; every pool XML
is also checked against libvirt's own schema with ``virt-xml-validate``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from hypervisor_panel_plugins.storage_nfs.backend import NFSStorage, check_nfs_server

from hypervisor_panel.panel import Panel
from hypervisor_panel.storage import GIB, StorageError
from tests.support.api import assert_error, small_template, snapshot
from tests.support.client import Client
from tests.support.nfs import (
    LIBNFS_V4_MAX_WRITE,
    NFSServer,
    closed_port,
    ganesha_missing,
    nfs_cp,
    nfs_ls,
    silent_listener,
    start_ganesha,
    stop_ganesha,
)

FS_NS = "http://libvirt.org/schemas/storagepool/fs/1.0"


@pytest.fixture(scope="module")
def ganesha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NFSServer]:
    missing = ganesha_missing()
    if missing:
        pytest.skip(f"no real NFS server: {missing}")
    dir = tmp_path_factory.mktemp("ganesha")
    server = start_ganesha(dir)
    yield server
    stop_ganesha(dir)


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)  # noqa: S314 - XML from libvirt or from the back end


def nfs_storage(name: str = "nfs1", **options) -> NFSStorage:
    return NFSStorage({"name": name, "options": {"version": "4", **options}})


def node_conn(admin: Client, panel: Panel) -> libvirt.virConnect:
    node = admin.get("/api/v1/nodes").body["items"][0]
    return panel.nodes.connection(node["id"]).get()


def pool_names(admin: Client, panel: Panel) -> list[str]:
    return sorted(p.name() for p in node_conn(admin, panel).listAllStoragePools(0))


def create_nfs(admin: Client, server: NFSServer, name: str = "nfs1", **options):
    body = {"name": name, "backend": "nfs",
            "options": {"host": server.host, "port": server.port, "export": server.export,
                        **options}}
    return admin.post("/api/v1/storages", body)


def validate_pool_xml(xml: str, tmp_path: Path) -> None:
    if not shutil.which("virt-xml-validate"):
        pytest.fail("virt-xml-validate is missing (Debian: libvirt-clients libxml2-utils)")
    path = tmp_path / "pool.xml"
    path.write_text(xml)
    proc = subprocess.run(["virt-xml-validate", str(path), "storagepool"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout


# -- pure XML --------------------------------------------------------------------------
POOL_CASES = {
    "v4-default-mount-point": (
        {"host": "nfs.example.com", "export": "/srv/vms"},
        "<pool type=\"netfs\"><name>hvp-nfs1</name><source>"
        "<host name=\"nfs.example.com\" /><dir path=\"/srv/vms\" /><format type=\"nfs\" />"
        "<protocol ver=\"4\" /></source>"
        "<target><path>/var/lib/libvirt/images/hvp-nfs-nfs1</path></target></pool>"),
    "v3-ipv4": (
        {"host": "192.0.2.10", "export": "/exports/vm", "version": "3"},
        "<pool type=\"netfs\"><name>hvp-nfs1</name><source>"
        "<host name=\"192.0.2.10\" /><dir path=\"/exports/vm\" /><format type=\"nfs\" />"
        "<protocol ver=\"3\" /></source>"
        "<target><path>/var/lib/libvirt/images/hvp-nfs-nfs1</path></target></pool>"),
    "v4.2-custom-mount-point": (
        {"host": "filer-01.lan", "export": "/", "version": "4.2",
         "mount_point": "/srv/hvp/nfs"},
        "<pool type=\"netfs\"><name>hvp-nfs1</name><source>"
        "<host name=\"filer-01.lan\" /><dir path=\"/\" /><format type=\"nfs\" />"
        "<protocol ver=\"4.2\" /></source>"
        "<target><path>/srv/hvp/nfs</path></target></pool>"),
    "v4.1-port": (
        {"host": "127.0.0.1", "export": "/export", "version": "4.1", "port": 20490},
        f"<pool xmlns:fs=\"{FS_NS}\" type=\"netfs\"><name>hvp-nfs1</name><source>"
        "<host name=\"127.0.0.1\" /><dir path=\"/export\" /><format type=\"nfs\" />"
        "<protocol ver=\"4.1\" /></source>"
        "<target><path>/var/lib/libvirt/images/hvp-nfs-nfs1</path></target>"
        "<fs:mount_opts><fs:option name=\"port=20490\" /></fs:mount_opts></pool>"),
}


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pool_xml_is_exact_and_valid_for_libvirt(case: str, tmp_path: Path):
    options, expected = POOL_CASES[case]
    xml = NFSStorage({"name": "nfs1", "options": options}).pool_xml()
    assert xml == expected
    validate_pool_xml(xml, tmp_path)


def test_clone_xml_is_a_qcow2_overlay_on_the_source(tmp_path: Path):
    node = tmp_path / "node.xml"
    shutil.copyfile(Path(__file__).parent / "data" / "test-node.xml", node)
    conn = libvirt.open(f"test://{node}")
    try:
        backend = nfs_storage(host="127.0.0.1", export="/export")
        pool = conn.storagePoolDefineXML(backend.pool_xml(), 0)
        pool.create(0)
        base = pool.createXML(backend.volume_xml("base.qcow2", GIB), 0)
        root = parse(backend.clone_xml("vm1-disk0.qcow2", 2 * GIB, base))
        assert root.find("target/format").get("type") == "qcow2"
        assert root.findtext("target/compat") == "1.1"  # dirty bitmaps need qcow2 v3
        assert root.findtext("backingStore/path") == \
            "/var/lib/libvirt/images/hvp-nfs-nfs1/base.qcow2"
        assert root.find("backingStore/format").get("type") == "qcow2"
        assert root.findtext("capacity") == str(2 * GIB)
    finally:
        conn.close()


# -- the reachability check, against a real NFS server ----------------------------------
@pytest.mark.parametrize("version", ["4", "4.1", "4.2"])
@pytest.mark.slow  # a real nfs-ganesha
def test_prepare_passes_against_a_real_nfs_server(ganesha: NFSServer, version: str):
    backend = nfs_storage(host=ganesha.host, port=ganesha.port, export=ganesha.export,
                          version=version)
    started = time.monotonic()
    backend.prepare(conn=None)  # the check needs no libvirt connection
    assert time.monotonic() - started < 1.0


@pytest.mark.slow  # a real nfs-ganesha
def test_prepare_refuses_nfsv3_on_an_nfsv4_only_server(ganesha: NFSServer):
    with pytest.raises(StorageError) as err:
        check_nfs_server(ganesha.host, ganesha.port, "3")
    assert err.value.code == "nfs_version_unsupported"
    assert err.value.message == (f"NFS server {ganesha.host}:{ganesha.port} does not offer "
                                 "NFSv3 (it offers NFSv4)")


def test_prepare_fails_fast_when_nothing_listens():
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(StorageError) as err:
        nfs_storage(host="127.0.0.1", port=port, export="/export").prepare(conn=None)
    assert time.monotonic() - started < 1.0
    assert err.value.code == "nfs_unreachable"
    assert err.value.message == (f"NFS server 127.0.0.1:{port} does not answer "
                                 "(Connection refused)")


def test_prepare_gives_up_on_a_silent_address_within_its_timeout():
    # 192.0.2.1 (TEST-NET-1) is never routed: the connect either times out or fails at once.
    started = time.monotonic()
    with pytest.raises(StorageError) as err:
        check_nfs_server("192.0.2.1", 2049, "4", timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert err.value.code == "nfs_unreachable"
    assert err.value.message.startswith("NFS server 192.0.2.1:2049 does not answer (")


def test_prepare_fails_clearly_when_the_host_does_not_resolve():
    started = time.monotonic()
    with pytest.raises(StorageError) as err:
        nfs_storage(host="nfs-server.invalid", export="/export").prepare(conn=None)
    assert time.monotonic() - started < 4.0  # DNS is bounded by the 3 s check timeout
    assert err.value.code == "nfs_host_unknown"
    assert err.value.message.startswith("cannot resolve host 'nfs-server.invalid': ")


def test_prepare_refuses_a_tcp_listener_that_is_not_nfs():
    with silent_listener() as port, pytest.raises(StorageError) as err:
        check_nfs_server("127.0.0.1", port, "4")
    assert err.value.code == "nfs_not_nfs"
    assert err.value.message.startswith(
        f"127.0.0.1:{port} accepts connections but is not an NFS server")


# -- through the API, on the test-driver node --------------------------------------------
def test_storage_backends_list_nfs_as_shared(admin: Client):
    backends = {b["name"]: b for b in admin.get("/api/v1/storage-backends").body["items"]}
    nfs = backends["nfs"]
    assert nfs["shared"] is True
    schema = nfs["options_schema"]
    assert schema["required"] == ["host", "export"]
    assert schema["properties"]["version"]["enum"] == ["3", "4", "4.1", "4.2"]
    assert schema["properties"]["version"]["default"] == "4"
    assert {"host", "export", "version", "port", "mount_point"} == set(schema["properties"])


@pytest.mark.slow  # a real nfs-ganesha
def test_nfs_storage_is_created_on_test_driver(admin: Client, panel: Panel,
                                               ganesha: NFSServer):
    resp = create_nfs(admin, ganesha)
    assert resp.status == 201, resp
    storage = resp.body
    assert storage["backend"] == "nfs" and storage["shared"] is True
    assert storage["options"] == {"host": ganesha.host, "port": ganesha.port,
                                  "export": ganesha.export, "version": "4"}
    assert [s["state"] for s in storage["nodes"].values()] == ["active"]
    pool = node_conn(admin, panel).storagePoolLookupByName("hvp-nfs1")
    assert pool.isActive() and pool.autostart()
    root = parse(pool.XMLDesc(0))
    assert root.get("type") == "netfs"
    assert root.find("source/host").get("name") == ganesha.host
    assert root.find("source/dir").get("path") == ganesha.export
    assert root.find("source/format").get("type") == "nfs"
    assert root.find("source/protocol").get("ver") == "4"
    assert root.findtext("target/path") == "/var/lib/libvirt/images/hvp-nfs-nfs1"
    listed = {s["name"]: s for s in admin.get("/api/v1/storages").body["items"]}
    assert listed["nfs1"]["shared"] is True
    assert admin.delete(f"/api/v1/storages/{storage['id']}").status == 204
    assert "hvp-nfs1" not in pool_names(admin, panel)


@pytest.mark.slow  # a real nfs-ganesha
def test_vm_disk_on_nfs_storage_on_test_driver(admin: Client, panel: Panel,
                                               ganesha: NFSServer):
    storage = create_nfs(admin, ganesha, mount_point="/srv/hvp-nfs").body
    task = admin.run("POST", "/api/v1/vms", {"name": "vm1", "storage": storage["id"],
                                             "vm_template": small_template(admin)["id"]})
    vm = admin.get(f"/api/v1/vms/{task['result']['vm']}").body
    assert vm["storage"] == storage["id"]
    conn = node_conn(admin, panel)
    disk = parse(conn.lookupByName("vm1").XMLDesc(0)).find("devices/disk")
    assert disk.get("type") == "file" and disk.get("device") == "disk"
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("source").get("file") == "/srv/hvp-nfs/vm1-disk0.qcow2"
    vol = conn.storagePoolLookupByName("hvp-nfs1").storageVolLookupByName("vm1-disk0.qcow2")
    assert parse(vol.XMLDesc(0)).find("target/format").get("type") == "qcow2"
    assert_error(admin.delete(f"/api/v1/storages/{storage['id']}"), 409, "storage_in_use")


@pytest.mark.slow  # a real nfs-ganesha
def test_vm_from_an_image_is_a_linked_clone_on_test_driver(admin: Client, panel: Panel,
                                                           ganesha: NFSServer):
    storage = create_nfs(admin, ganesha).body
    conn = node_conn(admin, panel)
    panel.storages.backend(storage).create_volume(conn, "debian.qcow2", GIB)
    task = admin.run("POST", "/api/v1/vms", {"name": "web1", "storage": storage["id"],
                                             "image": "debian.qcow2",
                                             "vm_template": small_template(admin)["id"]})
    assert any("linked clone" in line for line in map(str, task["log"])), task["log"]
    pool = conn.storagePoolLookupByName("hvp-nfs1")
    clone = parse(pool.storageVolLookupByName("web1-disk0.qcow2").XMLDesc(0))
    mount = "/var/lib/libvirt/images/hvp-nfs-nfs1"
    assert clone.findtext("backingStore/path") == f"{mount}/debian.qcow2"
    assert clone.find("backingStore/format").get("type") == "qcow2"
    assert clone.find("target/format").get("type") == "qcow2"
    disk = parse(conn.lookupByName("web1").XMLDesc(0)).find("devices/disk/source")
    assert disk.get("file") == f"{mount}/web1-disk0.qcow2"


NFS_BAD_OPTIONS = {
    "host-shell": {"host": "nfs;rm -rf /", "export": "/export"},
    "host-subst": {"host": "$(reboot)", "export": "/export"},
    "host-xml": {"host": "h'/><evil/>", "export": "/export"},
    "host-space": {"host": "nfs server", "export": "/export"},
    "host-with-port": {"host": "nfs:2049", "export": "/export"},
    "host-empty": {"host": "", "export": "/export"},
    "export-relative": {"host": "nfs.example.com", "export": "srv/vms"},
    "export-dotdot": {"host": "nfs.example.com", "export": "/srv/../etc"},
    "export-comma": {"host": "nfs.example.com", "export": "/srv,vers=2"},
    "version-unknown": {"host": "nfs.example.com", "export": "/e", "version": "4.3"},
    "version-number": {"host": "nfs.example.com", "export": "/e", "version": 4},
    "port-zero": {"host": "nfs.example.com", "export": "/e", "port": 0},
    "port-string": {"host": "nfs.example.com", "export": "/e", "port": "2049"},
    "mount-relative": {"host": "nfs.example.com", "export": "/e", "mount_point": "mnt"},
    "missing-export": {"host": "nfs.example.com"},
    "unknown-option": {"host": "nfs.example.com", "export": "/e", "options": "nolock"},
}


def test_bad_nfs_options_are_refused_and_create_nothing(admin: Client, panel: Panel):
    before, pools_before = snapshot(admin), pool_names(admin, panel)
    for case, options in NFS_BAD_OPTIONS.items():
        resp = admin.post("/api/v1/storages", {"name": "bad", "backend": "nfs",
                                               "options": options})
        assert resp.status == 422, (case, resp)
        assert_error(resp, 422, "validation_error")
    assert snapshot(admin) == before
    assert pool_names(admin, panel) == pools_before


@pytest.mark.parametrize(("host", "code", "message"), [
    ("127.0.0.1", "nfs_unreachable", "NFS server 127.0.0.1:{port} does not answer"),
    ("nfs-server.invalid", "nfs_host_unknown", "cannot resolve host 'nfs-server.invalid'"),
], ids=["closed-port", "unresolvable-host"])
def test_unreachable_nfs_server_leaves_nothing_behind(admin: Client, panel: Panel,
                                                      host: str, code: str, message: str):
    port = closed_port()
    before, pools_before = snapshot(admin), pool_names(admin, panel)
    started = time.monotonic()
    resp = admin.post("/api/v1/storages", {"name": "nfs1", "backend": "nfs", "options": {
        "host": host, "port": port, "export": "/export"}})
    assert time.monotonic() - started < 5.0
    assert_error(resp, 422, code)
    assert resp.body["error"]["message"].startswith(message.format(port=port))
    assert snapshot(admin) == before
    assert pool_names(admin, panel) == pools_before
    assert "hvp-nfs1" not in pool_names(admin, panel)


@pytest.mark.slow  # a real nfs-ganesha
def test_duplicate_storage_name_is_a_conflict(admin: Client, panel: Panel,
                                              ganesha: NFSServer):
    assert create_nfs(admin, ganesha).status == 201
    before, pools_before = snapshot(admin), pool_names(admin, panel)
    assert_error(create_nfs(admin, ganesha), 409, "already_exists")
    assert_error(create_nfs(admin, ganesha, name="default"), 409, "already_exists")
    assert snapshot(admin) == before
    assert pool_names(admin, panel) == pools_before


# -- the data path a node uses, through the real NFS server ------------------------------
def qemu_img(*args: str) -> str:
    if not shutil.which("qemu-img"):
        pytest.fail("qemu-img is missing (Debian: qemu-utils)")
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def qemu_io(image: Path, command: str) -> str:
    proc = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c", command, str(image)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Pattern verification failed" not in proc.stdout, \
        proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow  # a real nfs-ganesha
def test_qcow2_image_goes_to_the_export_and_back(ganesha: NFSServer, tmp_path: Path):
    local = tmp_path / "small.qcow2"
    # 512-byte clusters and 1 MiB keep the image under libnfs 4.0's NFSv4 write limit.
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(local), "1M")
    assert local.stat().st_size <= LIBNFS_V4_MAX_WRITE
    nfs_cp(local, ganesha.url("up.qcow2"))
    assert "up.qcow2" in nfs_ls(ganesha.url())
    assert (ganesha.export_dir / "up.qcow2").read_bytes() == local.read_bytes()
    back = tmp_path / "back.qcow2"
    nfs_cp(ganesha.url("up.qcow2"), back)
    assert back.read_bytes() == local.read_bytes()
    info = qemu_img("info", "--output=json", str(back))
    assert '"format": "qcow2"' in info and '"virtual-size": 1048576' in info
    qemu_img("check", "-q", str(back))


@pytest.mark.slow  # a real nfs-ganesha
def test_large_qcow2_image_is_read_back_through_nfs(ganesha: NFSServer, tmp_path: Path):
    # Written on the server's side (libnfs 4.0 cannot write it over NFSv4), read over NFS.
    image = ganesha.export_dir / "big.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(image), "1G")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 16M", str(image)],
                   capture_output=True, check=True)
    back = tmp_path / "big.qcow2"
    started = time.monotonic()
    nfs_cp(ganesha.url("big.qcow2"), back)
    elapsed = time.monotonic() - started
    assert back.read_bytes() == image.read_bytes()
    qemu_io(back, "read -P 0x5a 0 16M")
    assert elapsed < 10, f"reading {image.stat().st_size} bytes over NFS took {elapsed:.1f} s"


@pytest.mark.slow  # a real nfs-ganesha
def test_linked_clone_chain_is_readable_through_nfs(ganesha: NFSServer, tmp_path: Path):
    # The base image is on the server (as if a node had written it); the overlay (the
    # linked clone, backing file relative to it) is written through NFS; a "node" then
    # fetches both over NFS and reads the base's data through the overlay.
    base = ganesha.export_dir / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(base), "1M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 512K", str(base)],
                   capture_output=True, check=True)
    overlay = tmp_path / "clone.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-u",
             "-b", "base.qcow2", "-F", "qcow2", str(overlay), "1M")
    assert overlay.stat().st_size <= LIBNFS_V4_MAX_WRITE
    nfs_cp(overlay, ganesha.url("clone.qcow2"))
    assert {"base.qcow2", "clone.qcow2"} <= set(nfs_ls(ganesha.url()))
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    for name in ("base.qcow2", "clone.qcow2"):
        nfs_cp(ganesha.url(name), node_dir / name)
    assert (node_dir / "clone.qcow2").read_bytes() == overlay.read_bytes()
    chain = qemu_img("info", "--backing-chain", str(node_dir / "clone.qcow2"))
    assert "backing file: base.qcow2" in chain
    qemu_io(node_dir / "clone.qcow2", "read -P 0x5a 0 512K")
    qemu_io(node_dir / "clone.qcow2", "read -P 0 512K 512K")
