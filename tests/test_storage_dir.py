"""The dir back end on the real libvirtd: pools, volumes, linked clones, resize, streaming."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.support.client import Client
from tests.support.realvirt import ensure_libvirtd, served_panel

pytestmark = pytest.mark.slow  # a real libvirtd

GIB = 1024**3


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    uri = ensure_libvirtd()
    with served_panel(tmp_path_factory.mktemp("dir") / "data", uri) as (panel, admin):
        tag = uuid.uuid4().hex[:6]
        path = f"/var/lib/libvirt/images/hvp-dir-{tag}"
        storage = admin.post("/api/v1/storages", {"name": f"dir-{tag}", "backend": "dir",
                                                  "options": {"path": path}})
        assert storage.status == 201, storage
        raw = libvirt.open(uri)
        yield {"admin": admin, "storage": storage.body, "path": Path(path), "tag": tag, "raw": raw,
               "panel": panel}
        for vm in admin.get("/api/v1/vms").body["items"]:
            admin.run("DELETE", f"/api/v1/vms/{vm['id']}")
        base = f"/api/v1/storages/{storage.body['id']}/volumes"
        for vol in admin.get(base).body["items"]:
            admin.delete(f"{base}/{vol['name']}")
        assert admin.delete(f"/api/v1/storages/{storage.body['id']}").status == 204
    raw.close()
    subprocess.run(["rm", "-rf", path], check=False)


def volumes_url(env: dict) -> str:
    return f"/api/v1/storages/{env['storage']['id']}/volumes"


def qemu_img_info(path: Path) -> dict:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_pool_is_real_and_reports_capacity(env: dict):
    pool = env["raw"].storagePoolLookupByName(f"hvp-dir-{env['tag']}")
    assert pool.isActive() and pool.autostart()
    assert env["path"].is_dir()
    storage = env["admin"].get(f"/api/v1/storages/{env['storage']['id']}").body
    (node,) = storage["nodes"].values()
    assert node["state"] == "active" and node["capacity"] > node["available"] > 0


def test_image_upload_clone_resize_download(env: dict):
    admin: Client = env["admin"]
    admin.run("POST", volumes_url(env), {"name": "base.qcow2", "size_gib": 1})
    payload = b"HVP-IMAGE-" + bytes(range(256)) * 64
    # Upload raw bytes into a raw volume, as an admin importing an image would.
    admin.run("POST", volumes_url(env), {"name": "raw.img", "size_gib": 1, "format": "raw"})
    raw_vol = env["raw"].storagePoolLookupByName(f"hvp-dir-{env['tag']}") \
        .storageVolLookupByName("raw.img")
    assert raw_vol.info()[1] == GIB
    up = admin.request("PUT", f"{volumes_url(env)}/raw.img/content", raw=payload,
                       headers={"Content-Type": "application/octet-stream"})
    assert up.status == 200 and up.body["uploaded"] == len(payload)

    task = admin.run("POST", volumes_url(env), {"name": "clone.qcow2", "clone_from": "base.qcow2",
                                                "size_gib": 3})
    assert task["result"]["capacity"] == 3 * GIB
    info = qemu_img_info(env["path"] / "clone.qcow2")
    assert info["backing-filename"] == str(env["path"] / "base.qcow2")  # a linked clone
    assert info["virtual-size"] == 3 * GIB and info["actual-size"] < 2 * 1024 * 1024

    resized = admin.post(f"{volumes_url(env)}/clone.qcow2/actions/resize", {"size_gib": 4})
    assert resized.status == 200 and resized.body["capacity"] == 4 * GIB
    shrink = admin.post(f"{volumes_url(env)}/clone.qcow2/actions/resize", {"size_gib": 1})
    assert shrink.status == 422 and shrink.body["error"]["code"] == "shrink_refused"

    down = admin.get(f"{volumes_url(env)}/raw.img/content")
    assert down.status == 200 and len(down.body) == GIB
    assert down.body[: len(payload)] == payload and not down.body[len(payload):].strip(b"\0")
    names = [v["name"] for v in admin.get(volumes_url(env)).body["items"]]
    assert {"base.qcow2", "clone.qcow2", "raw.img"} <= set(names)


def test_vm_disk_is_a_linked_clone_of_an_image(env: dict):
    admin: Client = env["admin"]
    admin.run("POST", volumes_url(env), {"name": "os-image.qcow2", "size_gib": 2})
    template = admin.post("/api/v1/vm-templates", {"name": f"t-{env['tag']}",
                                                   "memory_mib": 128, "vcpus": 1,
                                                   "disk_gib": 5}).body
    started = time.monotonic()
    task = admin.run("POST", "/api/v1/vms", {"name": f"cow-{env['tag']}",
                                             "vm_template": template["id"],
                                             "storage": env["storage"]["id"],
                                             "image": "os-image.qcow2"})
    assert time.monotonic() - started < 10
    assert any("linked clone" in line for line in task["log"])
    vm = admin.get(f"/api/v1/vms/{task['result']['vm']}").body
    disk = env["path"] / vm["disks"][0]["volume"]
    info = qemu_img_info(disk)
    assert info["backing-filename"] == str(env["path"] / "os-image.qcow2")
    assert info["virtual-size"] == 5 * GIB
    busy = admin.delete(f"{volumes_url(env)}/os-image.qcow2")
    assert busy.status == 409 and busy.body["error"]["code"] == "volume_in_use"
    missing = admin.post("/api/v1/vms", {"name": f"nope-{env['tag']}",
                                         "vm_template": template["id"],
                                         "storage": env["storage"]["id"],
                                         "image": "no-such.qcow2"})
    assert missing.status == 422 and missing.body["error"]["code"] == "image_not_found"


def test_volume_bad_input(env: dict):
    admin: Client = env["admin"]
    for body in ({"name": "x"}, {"name": "x", "size_gib": 0},
                 {"name": "../etc/passwd", "size_gib": 1},
                 {"name": "x", "size_gib": 1, "format": "vmdk"}):
        resp = admin.post(volumes_url(env), body)
        assert resp.status == 422, (body, resp)
    admin.run("POST", volumes_url(env), {"name": "dup.qcow2", "size_gib": 1})
    dup = admin.post(volumes_url(env), {"name": "dup.qcow2", "size_gib": 1})
    task = admin.wait_task(dup.body["task"]["id"])
    assert task["state"] == "failed" and task["error"]["code"] == "volume_exists"
    gone = admin.post(volumes_url(env), {"name": "c.qcow2", "clone_from": "missing.qcow2"})
    task = admin.wait_task(gone.body["task"]["id"])
    assert task["state"] == "failed" and task["error"]["code"] == "volume_not_found"
    assert admin.delete(f"{volumes_url(env)}/never-there").status == 404
