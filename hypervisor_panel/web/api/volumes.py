"""Volumes of a storage: list, create, clone, resize, delete, stream content in and out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import BadRequest, Conflict, Invalid
from ...storage import GIB
from ..router import ApiRequest, Stream, accepted

if TYPE_CHECKING:
    from ...panel import Panel

VOLUME_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}
SIZE_GIB = {"type": "integer", "minimum": 1, "maximum": 64 * 1024}
CREATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": VOLUME_NAME,
        "size_gib": SIZE_GIB,
        "clone_from": {**VOLUME_NAME, "description": "copy-on-write clone of this volume"},
        "format": {"enum": ["qcow2", "raw"],
                   "description": "for new empty volumes, where the storage offers a choice"},
        "node": {"type": "string", "maxLength": 64},
    },
    "anyOf": [{"required": ["size_gib"]}, {"required": ["clone_from"]}],
}
RESIZE = {"type": "object", "additionalProperties": False, "required": ["size_gib"],
          "properties": {"size_gib": SIZE_GIB}}
NODE_QUERY = {"node": "node id (default: the first online node with the storage)"}


def register(panel: Panel) -> None:
    api = panel.api

    def target(storage_id: str, node_id: str | None):
        storage = panel.storages.require(storage_id)
        if node_id:
            panel.nodes.require(node_id)
        else:
            online = [n for n in panel.nodes.online_ids() if n in storage.get("nodes", {})]
            if not online:
                raise Invalid(f"storage {storage['name']!r} is on no online node",
                              code="node_offline")
            node_id = online[0]
        return storage, panel.storages.backend(storage), panel.nodes.connection(node_id).get()

    def users_of(storage_id: str, name: str) -> list[str]:
        return [vm["name"] for vm in panel.store.find("vms", storage=storage_id)
                if any(d["volume"] == name or d.get("image") == name for d in vm["disks"])]

    @api.route("/storages/<storage_id>/volumes", summary="Volumes in a storage",
               role="admin", tags=("storages",), query=NODE_QUERY)
    def list_volumes(req: ApiRequest, storage_id: str) -> dict[str, Any]:
        _storage, backend, conn = target(storage_id, req.query.get("node"))
        items = backend.list_volumes(conn)
        for item in items:
            item["id"] = item["name"]
            item["used_by"] = users_of(storage_id, item["name"])
        return {"items": items}

    @api.route("/storages/<storage_id>/volumes", "POST", role="admin", body=CREATE,
               summary="Create an empty volume or clone one (202 + task)", tags=("storages",))
    def create_volume(req: ApiRequest, storage_id: str):
        storage, backend, conn = target(storage_id, req.body.get("node"))
        name, body = req.body["name"], req.body

        def run(ctx) -> dict[str, Any]:
            size = body.get("size_gib", 0) * GIB
            if "clone_from" in body:
                vol = backend.clone_volume(conn, body["clone_from"], name, size or None)
            else:
                vol = backend.create_volume(conn, name, size, body.get("format"))
            _type, capacity, allocation = vol.info()
            return {"name": name, "capacity": capacity, "allocation": allocation}

        task = panel.tasks.submit("volume.create", run, title=f"Create volume {name}",
                                  owner=req.user["id"], subject=storage["id"],
                                  lock_key=f"volume:{storage['id']}:{name}")
        return accepted(task)

    @api.route("/storages/<storage_id>/volumes/<name>/actions/resize", "POST", role="admin",
               body=RESIZE, summary="Grow a volume", tags=("storages",), query=NODE_QUERY)
    def resize(req: ApiRequest, storage_id: str, name: str) -> dict[str, Any]:
        _storage, backend, conn = target(storage_id, req.query.get("node"))
        backend.resize_volume(conn, name, req.body["size_gib"] * GIB)
        _type, capacity, allocation = backend.lookup_volume(conn, name).info()
        return {"name": name, "capacity": capacity, "allocation": allocation}

    @api.route("/storages/<storage_id>/volumes/<name>", "DELETE", role="admin", status=204,
               summary="Delete a volume no VM uses", tags=("storages",), query=NODE_QUERY)
    def delete_volume(req: ApiRequest, storage_id: str, name: str) -> None:
        _storage, backend, conn = target(storage_id, req.query.get("node"))
        users = users_of(storage_id, name)
        if users:
            raise Conflict(f"volume {name!r} is used by VM(s) {', '.join(users)}",
                           code="volume_in_use")
        backend.lookup_volume(conn, name)
        backend.delete_volume(conn, name)

    @api.route("/storages/<storage_id>/volumes/<name>/content", role="admin",
               summary="Download a volume's bytes", tags=("storages",), query=NODE_QUERY)
    def download(req: ApiRequest, storage_id: str, name: str) -> Stream:
        _storage, backend, conn = target(storage_id, req.query.get("node"))
        backend.lookup_volume(conn, name)
        return Stream(backend.download(conn, name), filename=name)

    @api.route("/storages/<storage_id>/volumes/<name>/content", "PUT", role="admin",
               raw_body=True, summary="Upload bytes into an existing volume (an image)",
               tags=("storages",), query=NODE_QUERY)
    def upload(req: ApiRequest, storage_id: str, name: str) -> dict[str, Any]:
        _storage, backend, conn = target(storage_id, req.query.get("node"))
        length = req.raw.content_length
        if length is None or length <= 0:
            raise BadRequest("send the bytes with a Content-Length", code="length_required")
        if users_of(storage_id, name):
            raise Conflict(f"volume {name!r} is in use", code="volume_in_use")
        backend.upload(conn, name, req.raw.body, length)
        return {"name": name, "uploaded": length}



