"""Storage routes: back ends, storages on every node, and their volumes."""

from __future__ import annotations

from typing import Any

from ..host import PanelHost
from ..routes import ApiRequest, Query, RouteTable, Stream, accepted, created
from ..storages import PATCH_SCHEMA
from . import schemas as s

VOLUME_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}
SIZE_GIB = {"type": "integer", "minimum": 1, "maximum": 64 * 1024}
VOLUME_CREATE = {
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
NODE = [Query("node", {"type": "string", "maxLength": 64},
              "node id (default: the first online node with the storage)")]


def declare(api: RouteTable, panel: PanelHost) -> None:
    _declare_storages(api, panel)
    _declare_volumes(api, panel)


def _declare_storages(api: RouteTable, panel: PanelHost) -> None:
    storages = panel.storages

    @api.route("/storage-backends", summary="Registered storage back ends and option "
               "schemas", tags=("storages",), response=s.items(s.BACKEND))
    def list_backends(req: ApiRequest) -> dict[str, Any]:
        return {"items": storages.backends_info()}

    @api.route("/storages", summary="Storages with per-node state and capacity (users: no options)",
               tags=("storages",), response=s.items(s.STORAGE))
    def list_storages(req: ApiRequest) -> dict[str, Any]:
        return {"items": storages.listing(req.is_admin)}

    @api.route("/storages", "POST", summary="Create a storage on every node", role="admin",
               body=storages.create_schema, status=201, response=s.STORAGE,
               tags=("storages",), errors=(409, 503))
    def create_storage(req: ApiRequest):
        return created(storages.public(storages.create(req.body, req.user["id"])))

    @api.route("/storages/{storage_id}", summary="One storage", tags=("storages",),
               response=s.STORAGE)
    def get_storage(req: ApiRequest, storage_id: str) -> dict[str, Any]:
        return storages.public(storages.require(storage_id), req.is_admin)

    @api.route("/storages/{storage_id}", "PATCH", summary="Change a storage's description",
               role="admin", body=PATCH_SCHEMA, response=s.STORAGE, tags=("storages",))
    def patch_storage(req: ApiRequest, storage_id: str) -> dict[str, Any]:
        return storages.public(storages.update(storage_id, req.body))

    @api.route("/storages/{storage_id}", "DELETE", summary="Delete a storage that holds no "
               "disks", role="admin", tags=("storages",), errors=(409,))
    def delete_storage(req: ApiRequest, storage_id: str) -> None:
        storages.delete(storage_id, req.user["id"])


def _declare_volumes(api: RouteTable, panel: PanelHost) -> None:
    volumes = panel.volumes

    @api.route("/storages/{storage_id}/volumes", summary="Volumes in a storage",
               role="admin", tags=("storages",), query=NODE, response=s.items(s.VOLUME))
    def list_volumes(req: ApiRequest, storage_id: str) -> dict[str, Any]:
        return {"items": volumes.listing(storage_id, req.query.get("node"))}

    @api.route("/storages/{storage_id}/volumes", "POST", role="admin", body=VOLUME_CREATE,
               summary="Create an empty volume or clone one (202 + task)", status=202,
               response=s.ACCEPTED, tags=("storages",), errors=(409,))
    def create_volume(req: ApiRequest, storage_id: str):
        return accepted(volumes.create(storage_id, req.body, req.user))

    @api.route("/storages/{storage_id}/volumes/{name}/actions/resize", "POST", role="admin",
               body=RESIZE, summary="Grow a volume", tags=("storages",), query=NODE,
               response=s.VOLUME)
    def resize_volume(req: ApiRequest, storage_id: str, name: str) -> dict[str, Any]:
        return volumes.resize(storage_id, name, req.body["size_gib"], req.query.get("node"))

    @api.route("/storages/{storage_id}/volumes/{name}", "DELETE", role="admin",
               summary="Delete a volume no VM uses", tags=("storages",), query=NODE,
               errors=(409,))
    def delete_volume(req: ApiRequest, storage_id: str, name: str) -> None:
        volumes.delete(storage_id, name, req.query.get("node"))

    @api.route("/storages/{storage_id}/volumes/{name}/content", role="admin",
               summary="Download a volume's bytes", tags=("storages",), query=NODE,
               response=s.BINARY)
    def download_volume(req: ApiRequest, storage_id: str, name: str) -> Stream:
        return Stream(volumes.download(storage_id, name, req.query.get("node")),
                      filename=name)

    @api.route("/storages/{storage_id}/volumes/{name}/content", "PUT", role="admin",
               raw_body=True, summary="Upload bytes into an existing volume (an image)",
               tags=("storages",), query=NODE, response=s.UPLOADED, errors=(409,))
    def upload_volume(req: ApiRequest, storage_id: str, name: str) -> dict[str, Any]:
        return volumes.upload(storage_id, name, req.stream, req.content_length,
                              req.query.get("node"))
