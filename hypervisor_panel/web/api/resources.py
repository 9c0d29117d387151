"""Nodes, VM templates and storages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...cluster.join import CREATE_SCHEMA as NODE_CREATE
from ...cluster.join import HOST_KEY_REQUEST
from ...errors import Conflict
from ...storages import CREATE_SCHEMA as STORAGE_CREATE
from ...vm_templates import CREATE_SCHEMA as TEMPLATE_CREATE
from ...vm_templates import PATCH_SCHEMA as TEMPLATE_PATCH
from ..router import ApiRequest, accepted, created

if TYPE_CHECKING:
    from ...panel import Panel

NODE_PATCH = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"},
        "domain_type": {"enum": ["auto", "kvm", "qemu"],
                        "description": "auto: kvm where it works, else qemu (TCG)"},
        "maintenance": {"type": "boolean",
                        "description": "no new VMs are placed on a node in maintenance"},
        "maintenance_reason": {"type": "string", "maxLength": 200},
    },
}
SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {"memory_overcommit": {
        "type": "number", "minimum": 0.5, "maximum": 10,
        "description": "RAM that placement may promise, as a multiple of a node's RAM"}},
}
STORAGE_PATCH = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {"description": {"type": "string", "maxLength": 500}},
}


def register(panel: Panel) -> None:
    api = panel.api

    # -- nodes -------------------------------------------------------------------------
    def node_view(req: ApiRequest, node: dict[str, Any]) -> dict[str, Any]:
        """Admins see everything; users see which nodes exist and their state."""
        public = panel.nodes.public(node)
        if req.is_admin:
            return public
        return {k: public[k] for k in ("id", "name", "status", "kind")}

    @api.route("/nodes", summary="Nodes with status and resources", tags=("nodes",))
    def nodes(req: ApiRequest) -> dict[str, Any]:
        return {"items": [node_view(req, n) for n in panel.store.all("nodes")]}

    @api.route("/nodes/host-key", "POST", summary="Read a host's SSH key for confirmation",
               role="admin", body=HOST_KEY_REQUEST, tags=("nodes",))
    def host_key(req: ApiRequest) -> dict[str, Any]:
        return panel.joiner.host_key(req.body)

    @api.route("/nodes/local-libvirt", summary="Whether the local libvirtd answers and is "
               "not a node yet (then it can be added)", role="admin", tags=("nodes",))
    def local_libvirt(req: ApiRequest) -> dict[str, Any]:
        return panel.nodes.local_candidate()

    @api.route("/nodes/local-libvirt", "POST", summary="Add the local libvirtd as a node",
               role="admin", status=201, tags=("nodes",))
    def add_local_libvirt(req: ApiRequest):
        return created(panel.nodes.public(panel.nodes.add_local()))

    @api.route("/nodes", "POST", summary="Add a node over SSH (202 + task)", role="admin",
               body=NODE_CREATE, tags=("nodes",))
    def add_node(req: ApiRequest):
        return accepted(panel.joiner.submit(req.body, req.user))

    @api.route("/nodes/<node_id>", "DELETE", summary="Remove a node without VMs", status=204,
               role="admin", tags=("nodes",))
    def delete_node(req: ApiRequest, node_id: str) -> None:
        node = panel.nodes.require(node_id)
        vms = panel.store.find("vms", node=node_id)
        if vms:
            raise Conflict(f"node {node['name']!r} still has {len(vms)} VM(s); migrate or "
                           "delete them first", code="node_has_vms")
        if panel.store.count("nodes") == 1:
            raise Conflict("the last node cannot be removed", code="last_node")
        panel.nodes.remove(node_id)
        panel.store.delete("nodes", node_id)
        for key in ("known_hosts",) + (("keyfile",) if node.get("keyfile", "").endswith(
                f"node-{node_id}.key") else ()):
            if node.get(key):
                Path(node[key]).unlink(missing_ok=True)
        panel.emit("node.delete", node_id, actor=req.user["id"], name=node["name"])

    @api.route("/settings", summary="Cluster settings", tags=("settings",))
    def settings(req: ApiRequest) -> dict[str, Any]:
        return {"memory_overcommit": 1.0, **panel.settings()}

    @api.route("/settings", "PATCH", summary="Change cluster settings", role="admin",
               body=SETTINGS, tags=("settings",))
    def patch_settings(req: ApiRequest) -> dict[str, Any]:
        with panel.store.locked():
            if panel.store.get("settings", "cluster"):
                panel.store.update("settings", "cluster", req.body)
            else:
                panel.store.insert("settings", {"id": "cluster", **req.body})
        return settings(req)

    @api.route("/nodes/<node_id>", summary="One node", tags=("nodes",))
    def node(req: ApiRequest, node_id: str) -> dict[str, Any]:
        return node_view(req, panel.nodes.require(node_id))

    @api.route("/nodes/<node_id>", "PATCH", summary="Rename a node or set its domain type",
               role="admin", body=NODE_PATCH, tags=("nodes",))
    def patch_node(req: ApiRequest, node_id: str) -> dict[str, Any]:
        panel.nodes.require(node_id)
        with panel.store.locked():
            if "name" in req.body:
                other = panel.store.find_one("nodes", name=req.body["name"])
                if other and other["id"] != node_id:
                    raise Conflict(f"node {req.body['name']!r} already exists",
                                   code="already_exists")
            before = panel.nodes.require(node_id)
            updated = panel.store.update("nodes", node_id, req.body)
        if req.body.get("maintenance") and not before.get("maintenance"):
            task = panel.migrator.evacuate(node_id, req.user)
            return {**panel.nodes.public(updated), "task": task}
        return panel.nodes.public(updated)

    # -- VM templates --------------------------------------------------------------------
    @api.route("/vm-templates", summary="VM templates", tags=("vm-templates",))
    def templates(req: ApiRequest) -> dict[str, Any]:
        return {"items": panel.store.all("vm_templates")}

    @api.route("/vm-templates", "POST", summary="Create a VM template", role="admin",
               body=TEMPLATE_CREATE, tags=("vm-templates",))
    def create_template(req: ApiRequest):
        return created(panel.vm_templates.create(req.body))

    @api.route("/vm-templates/<template_id>", summary="One VM template",
               tags=("vm-templates",))
    def template(req: ApiRequest, template_id: str) -> dict[str, Any]:
        return panel.store.require("vm_templates", template_id, "VM template")

    @api.route("/vm-templates/<template_id>", "PATCH", summary="Change a VM template",
               role="admin", body=TEMPLATE_PATCH, tags=("vm-templates",))
    def patch_template(req: ApiRequest, template_id: str) -> dict[str, Any]:
        return panel.vm_templates.update(template_id, req.body)

    @api.route("/vm-templates/<template_id>", "DELETE", summary="Delete an unused template",
               role="admin", status=204, tags=("vm-templates",))
    def delete_template(req: ApiRequest, template_id: str) -> None:
        panel.vm_templates.delete(template_id)

    # -- storages ------------------------------------------------------------------------
    @api.route("/storages", summary="Storages with per-node state and capacity",
               tags=("storages",))
    def storages(req: ApiRequest) -> dict[str, Any]:
        return {"items": [panel.storages.public(s) for s in panel.store.all("storages")]}

    @api.route("/storages", "POST", summary="Create a storage on every node", role="admin",
               body=STORAGE_CREATE, tags=("storages",))
    def create_storage(req: ApiRequest):
        storage = panel.storages.create(req.body)
        panel.emit("storage.create", storage["id"], actor=req.user["id"], name=storage["name"])
        return created(panel.storages.public(storage))

    @api.route("/storages/<storage_id>", summary="One storage", tags=("storages",))
    def storage(req: ApiRequest, storage_id: str) -> dict[str, Any]:
        return panel.storages.public(panel.storages.require(storage_id))

    @api.route("/storages/<storage_id>", "PATCH", summary="Change a storage's description",
               role="admin", body=STORAGE_PATCH, tags=("storages",))
    def patch_storage(req: ApiRequest, storage_id: str) -> dict[str, Any]:
        panel.storages.require(storage_id)
        return panel.storages.public(panel.store.update("storages", storage_id, req.body))

    @api.route("/storages/<storage_id>", "DELETE", summary="Delete a storage that holds no "
               "disks", role="admin", status=204, tags=("storages",))
    def delete_storage(req: ApiRequest, storage_id: str) -> None:
        panel.storages.delete(storage_id)
        panel.emit("storage.delete", storage_id, actor=req.user["id"])
