"""Real objects of every kind on a test-driver panel, for tests that visit every route.

:func:`seed` creates them through the API and returns their ids keyed by the route
table's path parameter names (``vm_id``, ``storage_id``, ...); :func:`fill` puts them into
a route's path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.api import small_template
from tests.support.client import Client

RECIPE = ("#!/bin/sh\n# metadata_begin\n# recipe: {name}\n# tags: debian\n# revision: 1\n"
          "# metadata_end\necho hi\n")
USER_PASSWORD = "seeded-user-password"


def _ok(resp: Any, status: int = 201) -> dict[str, Any]:
    assert resp.status == status, resp
    return resp.body


def user_client(admin: Client, name: str) -> tuple[Client, dict[str, Any]]:
    """A new user ``name`` (role user) and a client logged in as them."""
    user = _ok(admin.post("/api/v1/users", {"name": name, "password": USER_PASSWORD}))
    return Client(admin.base).login(name, USER_PASSWORD), user


def seed(admin: Client, tmp: Path, *, owner: Client | None = None, tag: str = "s"
         ) -> dict[str, str]:
    """One object of every kind; the VM (and its task) created by ``owner`` (default admin).

    ``tmp`` holds what lives on the panel's machine (backup folder, repositories).
    """
    owner = owner or admin
    ids: dict[str, str] = {"plugin_id": "storage_dir"}
    ids["node_id"] = admin.get("/api/v1/nodes").body["items"][0]["id"]
    ids["storage_id"] = admin.get("/api/v1/storages").body["items"][0]["id"]
    ids["template_id"] = small_template(admin)["id"]
    network = _ok(admin.post("/api/v1/networks", {"name": f"{tag}net", "mode": "nat"}))
    ids["network_id"] = network["id"]
    pool = _ok(admin.post("/api/v1/ip-pools", {
        "name": f"{tag}pool", "network": network["id"], "subnet": "10.88.0.0/24",
        "gateway": "10.88.0.1", "range": {"start": "10.88.0.10", "end": "10.88.0.99"}}))
    ids["pool_id"] = pool["id"]
    ids["reserved"] = _ok(admin.post(f"/api/v1/ip-pools/{pool['id']}/reservations",
                                     {"address": "10.88.0.90"}))["address"]
    task = owner.run("POST", "/api/v1/vms", {"name": f"{tag}vm", "vm_template":
                                             ids["template_id"], "network": network["id"]})
    ids["vm_id"], ids["task_id"] = task["result"]["vm"], task["id"]
    nic = owner.get(f"/api/v1/vms/{ids['vm_id']}/interfaces").body["items"][0]
    ids["nic_id"], ids["address"] = nic["id"], nic["addresses"][0]["address"]
    volume = admin.run("POST", f"/api/v1/storages/{ids['storage_id']}/volumes",
                       {"name": f"{tag}vol.qcow2", "size_gib": 1})
    ids["name"] = volume["result"].get("name", f"{tag}vol.qcow2")
    owner.run("POST", f"/api/v1/vms/{ids['vm_id']}/snapshots", {"name": ids["name"]})
    _ok(admin.patch("/api/v1/recipe-settings", {"users_may_add": True}), 200)
    ids["recipe_id"] = _ok(owner.post("/api/v1/recipes",
                                      {"script": RECIPE.format(name=f"{tag}recipe")}))["id"]
    ids["os_template_id"] = _ok(admin.post("/api/v1/os-templates/uploads", {
        "name": f"{tag}os", "os_family": "testos", "format": "qcow2",
        "storage": ids["storage_id"]}))["id"]
    repo = tmp / f"{tag}-repo"
    repo.mkdir()
    (repo / "index.json").write_text(json.dumps({"templates": []}))
    ids["repo_id"] = _ok(admin.post("/api/v1/os-template-repos", {
        "name": f"{tag}repo", "source": "folder", "options": {"path": str(repo)}}))["id"]
    recipes = tmp / f"{tag}-recipes"
    recipes.mkdir()
    source = admin.run("POST", "/api/v1/recipe-sources", {
        "name": f"{tag}src", "source": "folder", "options": {"path": str(recipes)}})
    ids["source_id"] = source["result"].get("source") or admin.get(
        "/api/v1/recipe-sources").body["items"][0]["id"]
    target = _ok(admin.post("/api/v1/backup-targets", {
        "name": f"{tag}target", "backend": "local",
        "options": {"path": str(tmp / f"{tag}-backups")}}))
    ids["target_id"] = target["id"]
    backup = admin.run("POST", "/api/v1/backups", {"target": target["id"]}, timeout=60)
    ids["backup_id"] = backup["result"].get("backup") or admin.get(
        "/api/v1/backups").body["items"][0]["id"]
    ids["schedule_id"] = _ok(admin.post("/api/v1/backup-schedules", {
        "name": f"{tag}sched", "target": target["id"], "cron": "0 1 * * *",
        "vms": {"mode": "none"}, "panel": True}))["id"]
    ids["user_id"] = _ok(admin.post("/api/v1/users", {"name": f"{tag}user",
                                                       "password": USER_PASSWORD}))["id"]
    ids["token_id"] = _ok(admin.post("/api/v1/tokens", {"name": f"{tag}token"}))["id"]
    return ids


def fill(path: str, ids: dict[str, str]) -> str:
    """``path`` with its parameters replaced by the seeded ids (``{address}`` of an IP
    pool's reservations is the reserved address, of a VM's interface its address)."""
    if "/reservations/" in path:
        path = path.replace("{address}", ids["reserved"])
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return path
