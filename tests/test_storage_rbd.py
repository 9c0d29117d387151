"""Ceph RBD on a real single-node cluster (memstore OSD) and the real libvirtd.

Proves the data path, not only the XML: bytes uploaded into an RBD image through the API are
read back by a real TCG guest booted with a copy-on-write RBD clone of that image as its disk.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.support.ceph import CephCluster, start_ceph, stop_ceph
from tests.support.client import Client
from tests.support.guest import DISK_PREFIX, MARKER, build_guest_assets
from tests.support.realvirt import REPO_ROOT, ensure_libvirtd, served_panel

pytestmark = pytest.mark.slow
PAYLOAD = b"HVP-RBD-DATA-" + uuid.uuid4().hex[:16].encode()


@pytest.fixture(scope="module")
def ceph() -> Iterator[CephCluster]:
    # Short path: Ceph's admin sockets live under it (UNIX socket paths max 107 bytes).
    work = Path(tempfile.mkdtemp(prefix="hvpceph-", dir="/tmp"))
    cluster = start_ceph(work)
    yield cluster
    stop_ceph(work)
    subprocess.run(["rm", "-rf", str(work)], check=False)


@pytest.fixture(scope="module")
def env(ceph: CephCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    uri = ensure_libvirtd()
    with served_panel(tmp_path_factory.mktemp("rbd") / "data", uri) as (panel, admin):
        raw = libvirt.open(uri)
        yield {"admin": admin, "panel": panel, "raw": raw, "tag": uuid.uuid4().hex[:6]}
        for vm in admin.get("/api/v1/vms").body["items"]:
            admin.run("DELETE", f"/api/v1/vms/{vm['id']}")
        for storage in admin.get("/api/v1/storages").body["items"]:
            base = f"/api/v1/storages/{storage['id']}/volumes"
            for vol in admin.get(base).body.get("items", []):
                admin.delete(f"{base}/{vol['name']}")
            admin.delete(f"/api/v1/storages/{storage['id']}")
    raw.close()


def options(ceph: CephCluster, **extra) -> dict:
    return {"monitors": [ceph.mon_addr], "pool": ceph.pool, "user": ceph.libvirt_user,
            "key": ceph.libvirt_key, **extra}


def rbd_info(ceph: CephCluster, image: str) -> dict:
    out = subprocess.run(["rbd", "-c", str(ceph.conf), "--keyring", str(ceph.admin_keyring),
                          "info", "--format", "json", f"{ceph.pool}/{image}"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return json.loads(out)


def ceph_secrets(raw: libvirt.virConnect) -> list[str]:
    return [s.usageID() for s in raw.listAllSecrets(0)
            if s.usageType() == libvirt.VIR_SECRET_USAGE_TYPE_CEPH]


def pools(raw: libvirt.virConnect) -> list[str]:
    return [p.name() for p in raw.listAllStoragePools(0)]


@pytest.fixture(scope="module")
def storage(env: dict, ceph: CephCluster) -> dict:
    resp = env["admin"].post("/api/v1/storages", {"name": f"ceph-{env['tag']}",
                                                  "backend": "rbd", "options": options(ceph)})
    assert resp.status == 201, resp
    return resp.body


def test_rbd_storage_keeps_the_key_secret_and_reports_capacity(env: dict, storage: dict,
                                                                ceph: CephCluster):
    assert "key" not in storage["options"] and storage["options"]["key_set"] is True
    assert storage["shared"] is True
    assert ceph.libvirt_key not in json.dumps(env["admin"].get("/api/v1/storages").body)
    (node,) = storage["nodes"].values()
    assert node["state"] == "active" and node["capacity"] > 0
    pool = env["raw"].storagePoolLookupByName(f"hvp-ceph-{env['tag']}")
    assert pool.isActive()
    usage = f"client.{ceph.libvirt_user} hvp-ceph-{env['tag']}"
    secret = env["raw"].secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_CEPH, usage)
    assert "private='yes'" in secret.XMLDesc(0).replace('"', "'")
    assert "<key>" not in pool.XMLDesc(0) and ceph.libvirt_key not in pool.XMLDesc(0)


def wrong_key(key: str) -> str:
    """A well-formed cephx key with another secret."""
    raw = base64.b64decode(key)
    return base64.b64encode(raw[:12] + os.urandom(len(raw) - 12)).decode()


@pytest.mark.parametrize(("change", "code"), [
    ({"key": "WRONG"}, "ceph_auth_failed"),
    ({"key": base64.b64encode(b"x" * 28).decode()}, "ceph_bad_key"),
    ({"user": "nobody"}, "ceph_auth_failed"),
    ({"monitors": ["127.0.0.1:1"]}, "ceph_unreachable"),
    ({"pool": "no-such-pool"}, "ceph_pool_not_found"),
])
def test_bad_ceph_settings_fail_fast_and_leave_nothing(env: dict, ceph: CephCluster,
                                                       change: dict, code: str):
    before = (pools(env["raw"]), ceph_secrets(env["raw"]),
              env["admin"].get("/api/v1/storages").body["items"])
    if change.get("key") == "WRONG":
        change = {"key": wrong_key(ceph.libvirt_key)}
    started = time.monotonic()
    resp = env["admin"].post("/api/v1/storages", {"name": f"bad-{env['tag']}",
                                                  "backend": "rbd",
                                                  "options": options(ceph, **change)})
    assert time.monotonic() - started < 10
    assert resp.status == 422 and resp.body["error"]["code"] == code, resp
    after = (pools(env["raw"]), ceph_secrets(env["raw"]),
             env["admin"].get("/api/v1/storages").body["items"])
    assert len(after[0]) == len(before[0]) and after[1] == before[1]
    assert [s["name"] for s in after[2]] == [s["name"] for s in before[2]]


def test_rbd_options_are_validated(env: dict, ceph: CephCluster):
    for bad in ({"monitors": []}, {"monitors": ["a b"]}, {"monitors": ["x;reboot"]},
                {"monitors": [ceph.mon_addr], "key": "not base64!"},
                {"monitors": [ceph.mon_addr], "secret": "x"}):
        resp = env["admin"].post("/api/v1/storages", {"name": "bad", "backend": "rbd",
                                                      "options": bad})
        assert resp.status == 422, (bad, resp)


def test_guest_boots_from_an_rbd_clone_and_reads_the_image_bytes(env: dict, storage: dict,
                                                                  ceph: CephCluster):
    admin: Client = env["admin"]
    volumes = f"/api/v1/storages/{storage['id']}/volumes"
    admin.run("POST", volumes, {"name": "golden", "size_gib": 1})
    image = PAYLOAD + b"\0" * (4096 - len(PAYLOAD))
    up = admin.request("PUT", f"{volumes}/golden/content", raw=image,
                       headers={"Content-Type": "application/octet-stream"})
    assert up.status == 200, up

    assets = build_guest_assets(REPO_ROOT / ".cache" / "guest")
    template = admin.post("/api/v1/vm-templates", {"name": f"rbd-{env['tag']}",
                                                   "memory_mib": 128, "vcpus": 1,
                                                   "disk_gib": 2}).body
    name = f"rbdvm-{env['tag']}"
    started = time.monotonic()
    task = admin.run("POST", "/api/v1/vms", {
        "name": name, "vm_template": template["id"], "storage": storage["id"],
        "image": "golden", "start": True,
        "boot": {"kernel": str(assets.kernel), "initrd": str(assets.initrd),
                 "cmdline": "console=ttyS0 quiet"}}, timeout=120)
    provision = time.monotonic() - started
    vm = admin.get(f"/api/v1/vms/{task['result']['vm']}").body
    assert vm["state"] == "running" and provision < 10

    info = rbd_info(ceph, f"{name}-disk0")
    assert info["parent"]["image"] == "golden"  # an RBD copy-on-write clone
    assert info["size"] == 2 * 1024**3
    xml = env["raw"].lookupByName(name).XMLDesc(0)
    assert "protocol='rbd'" in xml.replace('"', "'") and ceph.libvirt_key not in xml

    deadline = time.monotonic() + 90
    console = ""
    while time.monotonic() < deadline and DISK_PREFIX not in console:
        console = admin.get(f"/api/v1/vms/{vm['id']}/console").body["text"]
        time.sleep(0.3)
    assert MARKER in console or DISK_PREFIX in console, console[-1500:]
    disk_line = next(line for line in console.splitlines() if line.startswith(DISK_PREFIX))
    assert PAYLOAD.decode() in disk_line  # the guest read the image's bytes through RBD

    admin.run("DELETE", f"/api/v1/vms/{vm['id']}")
    gone = subprocess.run(["rbd", "-c", str(ceph.conf), "--keyring", str(ceph.admin_keyring),
                           "info", f"{ceph.pool}/{name}-disk0"], capture_output=True,
                          check=False, timeout=30)
    assert gone.returncode != 0
    assert admin.delete(f"{volumes}/golden").status == 204  # the base had a snapshot


def test_deleting_the_storage_removes_pool_and_secret(env: dict, ceph: CephCluster):
    resp = env["admin"].post("/api/v1/storages", {"name": f"tmp-{env['tag']}",
                                                  "backend": "rbd", "options": options(ceph)})
    assert resp.status == 201, resp
    usage = f"client.{ceph.libvirt_user} hvp-tmp-{env['tag']}"
    assert usage in ceph_secrets(env["raw"])
    assert env["admin"].delete(f"/api/v1/storages/{resp.body['id']}").status == 204
    assert usage not in ceph_secrets(env["raw"])
    assert f"hvp-tmp-{env['tag']}" not in pools(env["raw"])


if os.environ.get("HVP_SKIP_CEPH"):
    pytestmark = [pytest.mark.slow, pytest.mark.skip(reason="HVP_SKIP_CEPH is set")]
