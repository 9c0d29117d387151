"""An installer ISO uploaded to a storage boots in a VM with a VNC display (real libvirtd).

The ISO is made here with pycdlib and Debian's isolinux: it shows an "installer" screen on
the VGA display and on the serial port. The test checks the domain boots from the CD-ROM,
the VNC server on 127.0.0.1 speaks RFB, and a screenshot of the display is not blank.
"""

from __future__ import annotations

import io
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pycdlib
import pytest

from tests.support.client import Client
from tests.support.realvirt import ensure_libvirtd, served_panel

pytestmark = pytest.mark.slow

ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
BANNER = "HVP INSTALLER READY"  # on the VGA screen (SAY); the serial port shows the prompt
PROMPT = "boot: "


def installer_iso() -> bytes:
    """A bootable ISO whose isolinux shows BANNER on screen, talks on the serial port and
    waits at its prompt."""
    config = (f"SERIAL 0 115200\nSAY {BANNER}\nPROMPT 1\nTIMEOUT 0\n"
              "DEFAULT hang\nLABEL hang\n  LOCALBOOT 0x80\n").encode()
    message = f"\n{BANNER}\n".encode()
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="HVPINSTALL")
    iso.add_directory("/ISOLINUX", rr_name="isolinux", joliet_path="/isolinux")
    for name, data in (("ISOLINUX.BIN;1", ISOLINUX.read_bytes()),
                       ("LDLINUX.C32;1", LDLINUX.read_bytes()),
                       ("ISOLINUX.CFG;1", config), ("MSG.TXT;1", message)):
        lower = name.split(";")[0].lower()
        iso.add_fp(io.BytesIO(data), len(data), f"/ISOLINUX/{name}", rr_name=lower,
                   joliet_path=f"/isolinux/{lower}")
    iso.add_eltorito("/ISOLINUX/ISOLINUX.BIN;1", "/ISOLINUX/BOOT.CAT;1",
                     boot_info_table=True, media_name="noemul", bootable=True)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    if not (ISOLINUX.exists() and LDLINUX.exists()):
        pytest.skip("isolinux and syslinux-common are not installed")
    uri = ensure_libvirtd()
    tag = uuid.uuid4().hex[:6]
    pool_dir = f"/var/lib/libvirt/images/hvp-iso-{tag}"
    with served_panel(tmp_path_factory.mktemp("iso") / "data", uri) as (panel, admin):
        storage = admin.post("/api/v1/storages", {"name": f"iso-{tag}", "backend": "dir",
                                                  "options": {"path": pool_dir}}).body
        template = admin.post("/api/v1/vm-templates", {"name": f"iso-{tag}", "memory_mib": 128,
                                                       "vcpus": 1, "disk_gib": 1}).body
        try:
            yield {"admin": admin, "storage": storage, "template": template, "tag": tag,
                   "uri": uri}
        finally:
            for vm in admin.get("/api/v1/vms").body["items"]:
                admin.run("DELETE", f"/api/v1/vms/{vm['id']}")
            for volume in admin.get(f"/api/v1/storages/{storage['id']}/volumes").body["items"]:
                admin.delete(f"/api/v1/storages/{storage['id']}/volumes/{volume['name']}")
            admin.delete(f"/api/v1/storages/{storage['id']}")
            if Path(pool_dir).exists():
                Path(pool_dir).rmdir()


def test_an_uploaded_iso_boots_to_its_installer_screen_over_vnc(real: dict):
    admin: Client = real["admin"]
    storage = real["storage"]["id"]
    data = installer_iso()
    size_gib = 1
    admin.run("POST", f"/api/v1/storages/{storage}/volumes",
              {"name": "installer.iso", "size_gib": size_gib, "format": "raw"})
    uploaded = admin.request("PUT", f"/api/v1/storages/{storage}/volumes/installer.iso/content",
                             raw=data, headers={"Content-Type": "application/octet-stream"})
    assert uploaded.status == 200, uploaded
    task = admin.run("POST", "/api/v1/vms", {"name": f"inst-{real['tag']}",
                                             "vm_template": real["template"]["id"],
                                             "storage": storage, "iso": "installer.iso",
                                             "start": True}, timeout=120)
    assert task["state"] == "succeeded", task
    vm = admin.get(f"/api/v1/vms/{task['result']['vm']}").body
    assert vm["boot_order"] == ["cdrom", "hd"] and vm["vnc"] is True
    conn = libvirt.open(real["uri"])
    try:
        dom = conn.lookupByName(vm["name"])
        xml = dom.XMLDesc()
        assert "device=\"cdrom\"" in xml.replace("'", '"') and "installer.iso" in xml
        console = ""
        deadline = time.monotonic() + 60
        while PROMPT not in console and time.monotonic() < deadline:
            console = admin.get(f"/api/v1/vms/{vm['id']}/console").body["text"]
            time.sleep(0.5)
        # The installer's boot loader runs from the CD-ROM and waits at its prompt (its
        # SERIAL line in isolinux.cfg is what makes it talk on the serial console at all).
        assert "ISOLINUX" in console and PROMPT in console, console[-1000:]
        port = int(xml.split("graphics type=\"vnc\" port=\"", 1)[1].split("\"", 1)[0]
                   if "graphics type=\"vnc\" port=\"" in xml
                   else xml.split("graphics type='vnc' port='", 1)[1].split("'", 1)[0])
        with socket.create_connection(("127.0.0.1", port), 5) as sock:
            assert sock.recv(12).startswith(b"RFB ")  # a VNC server, on loopback only
        stream = conn.newStream(0)
        dom.screenshot(stream, 0, 0)
        image = b""
        while chunk := stream.recv(1 << 20):
            image += chunk
        stream.finish()
        pixels = image.split(b"\n", 3)[3]  # a PPM: header lines, then RGB bytes
        assert len(set(pixels[::97])) > 1, "the screen is blank"
    finally:
        conn.close()
    admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/destroy")
    admin.run("DELETE", f"/api/v1/vms/{vm['id']}")
    names = [v["name"] for v in admin.get(f"/api/v1/storages/{storage}/volumes").body["items"]]
    assert "installer.iso" in names  # the VM's delete keeps the shared ISO
