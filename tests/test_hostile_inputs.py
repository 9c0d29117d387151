"""Hostile inputs beyond numbers and sizes (those are in test_hostile_http.py): unicode
tricks, XML and shell metacharacters, ``../`` paths and broken encodings. Each is a 4xx
with the JSON error shape, or is kept verbatim where free text is allowed, and changes
nothing else; libvirt's XML never carries an injected element.
"""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hypervisor_panel.panel import Panel
from tests.conftest import ADMIN_PASSWORD
from tests.support.api import assert_error, small_template, snapshot
from tests.support.client import Client

TRICKY_NAMES = [
    "\u0430dmin",  # Cyrillic a: looks like "admin"
    "admin\u200b",  # zero-width space
    "\u202eevil.exe",  # right-to-left override
    "\uff41\uff44\uff4d\uff49\uff4e",  # full-width "admin"
    "a\u0000b",  # NUL
    "a\nb",
    "name with space",
    "../etc",
    "x<y>",
    "$(reboot)",
    "`id`",
    "a;rm -rf /",
    "-rf",
    "",
]
PAYLOAD = ("</description><devices><disk type='file'><source file='/etc/shadow'/></disk>"
           "</devices>]]><!ENTITY x SYSTEM 'file:///etc/passwd'>&x; $(reboot) `id` ; | & "
           "\u202e\u200b\u0430 'quoted' \"double\" \\ \U0001f4a9")


@pytest.mark.parametrize("name", TRICKY_NAMES, ids=repr)
def test_names_with_unicode_tricks_or_metacharacters_are_refused(admin: Client, name: str):
    before = snapshot(admin)
    template = small_template(admin)
    for path, body in (
            ("/api/v1/users", {"name": name, "password": "long-enough-1"}),
            ("/api/v1/vm-templates", {"name": name, "memory_mib": 64, "vcpus": 1,
                                      "disk_gib": 1}),
            ("/api/v1/vms", {"name": name, "vm_template": template["id"]}),
            ("/api/v1/vms", {"name": "ok", "vm_template": template["id"], "hostname": name}),
            ("/api/v1/storages", {"name": name, "backend": "dir",
                                  "options": {"path": "/var/lib/libvirt/images/hvp-x"}}),
            ("/api/v1/networks", {"name": name, "mode": "user"})):
        assert_error(admin.post(path, body), 422)
    assert snapshot(admin) == before


@pytest.mark.parametrize("username", ["\u0430dmin", "admin\u200b", "ADMIN", "admin ",
                                      " admin", "admin\u0000", "\uff41\uff44\uff4d\uff49\uff4e"],
                         ids=repr)
def test_a_lookalike_user_name_never_signs_in_as_admin(anon: Client, username: str):
    resp = anon.post("/api/v1/auth/login", {"username": username, "password": ADMIN_PASSWORD})
    assert_error(resp, 401, "invalid_credentials")


def test_free_text_is_kept_verbatim_and_never_reaches_libvirt_xml(admin: Client,
                                                                  panel: Panel):
    template = small_template(admin)
    task = admin.run("POST", "/api/v1/vms", {"name": "plain", "vm_template": template["id"]})
    vm_id = task["result"]["vm"]
    conn = panel.nodes.connection(admin.get(f"/api/v1/vms/{vm_id}").body["node"]).get()
    before = conn.lookupByName(panel.vms.require(vm_id, {"role": "admin"})["domain_name"])
    devices_before = len(ET.fromstring(before.XMLDesc()).find("devices"))  # noqa: S314 - ours
    patched = admin.patch(f"/api/v1/vms/{vm_id}", {"description": PAYLOAD})
    assert patched.status == 200, patched
    assert admin.get(f"/api/v1/vms/{vm_id}").body["description"] == PAYLOAD
    made = admin.post("/api/v1/vm-templates", {"name": "t-payload", "memory_mib": 64,
                                               "vcpus": 1, "disk_gib": 1,
                                               "description": PAYLOAD})
    assert made.status == 201 and made.body["description"] == PAYLOAD, made
    # Restart the domain definition path: the XML stays well-formed and uninjected.
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/start")
    dom = conn.lookupByUUIDString(before.UUIDString())
    root = ET.fromstring(dom.XMLDesc())  # noqa: S314 - libvirt's answer
    assert len(root.find("devices")) == devices_before
    assert "/etc/shadow" not in dom.XMLDesc() and "ENTITY" not in dom.XMLDesc()
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/destroy")
    admin.run("DELETE", f"/api/v1/vms/{vm_id}")


@pytest.mark.parametrize("raw", [
    b'{"username": "\\ud800", "password": "x"}',  # a lone surrogate
    b'{"username": "\xff\xfe", "password": "x"}',  # not UTF-8
    b'\xef\xbb\xbf{"username": "admin", "password": "x"}',  # a byte-order mark
    b'{"username": "admin", "password": "x", "username": "other"}',  # a duplicate key
    b'{"username": "admin" "password": "x"}',
    b"[1, 2]",
    b'"just a string"',
    b"\x00",
], ids=lambda raw: raw[:24].decode("latin-1"))
def test_bodies_that_are_not_one_clean_json_object_are_refused(anon: Client, raw: bytes):
    resp = anon.request("POST", "/api/v1/auth/login", raw=raw,
                        headers={"Content-Type": "application/json"})
    assert resp.status in (400, 401, 422), resp
    assert set(resp.body) == {"error"} and "Traceback" not in str(resp.body)


def test_dot_dot_paths_are_refused_everywhere_a_path_is_taken(admin: Client,
                                                                tmp_path: Path):
    before = snapshot(admin)
    storage = admin.get("/api/v1/storages").body["items"][0]["id"]
    for name in ("..", "../x", "..%2fx", "%2e%2e%2fetc%2fshadow", "x%00y"):
        for method in ("GET", "DELETE"):
            path = f"/api/v1/storages/{storage}/volumes/{name}" + (
                "/content" if method == "GET" else "")
            resp = admin.request(method, path)
            assert resp.status in (400, 404, 422), (path, resp)
    outside = f"{tmp_path}/a/../../../etc"
    for path, body in (
            ("/api/v1/storages", {"name": "dots", "backend": "dir",
                                  "options": {"path": outside}}),
            ("/api/v1/backup-targets", {"name": "dots", "backend": "local",
                                        "options": {"path": outside}}),
            ("/api/v1/os-template-repos", {"name": "dots", "source": "folder",
                                           "options": {"path": outside}}),
            ("/api/v1/recipe-sources", {"name": "dots", "source": "folder",
                                        "options": {"path": outside}})):
        resp = admin.post(path, body)
        assert 400 <= resp.status < 500 and resp.status != 404, (path, resp)
    assert snapshot(admin) == before
    assert admin.get("/api/v1/backup-targets").body["items"] == []


def test_a_quoted_path_parameter_is_one_segment_not_a_traversal(admin: Client):
    for vm_id in ("..", "../users", urllib.parse.quote("../users", safe=""), "*", "%00"):
        resp = admin.get(f"/api/v1/vms/{vm_id}")
        assert resp.status in (400, 404), (vm_id, resp)
        assert "items" not in resp.body
