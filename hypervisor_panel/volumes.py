"""Volumes of a storage on a node: list, create or clone (a task), grow, delete, stream.

Volumes live in libvirt pools, not in the store; which VM uses a volume comes from the
references registry (kind ``volume``, id ``STORAGE_ID/VOLUME``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import libvirt

from .errors import BadRequest, Conflict, Invalid
from .references import References
from .storage import GIB, StorageBackend
from .storages import StorageRecord, StorageService
from .tasks import TaskContext, TaskManager

if TYPE_CHECKING:
    from .nodes import NodeManager


def volume_ref(storage_id: str, name: str) -> str:
    """The id a volume has in the references registry."""
    return f"{storage_id}/{name}"


class VolumeService:
    def __init__(self, storages: StorageService, nodes: NodeManager, tasks: TaskManager,
                 references: References) -> None:
        self.storages = storages
        self.nodes = nodes
        self.tasks = tasks
        self.references = references

    def _target(self, storage_id: str, node_id: str | None
                ) -> tuple[StorageRecord, StorageBackend, libvirt.virConnect, str]:
        """The storage, its back end and the node to act on (default: the first online).

        Changing volumes fires no libvirt event, so the node's connection is told
        (``changed()``: the demo node saves its state then).
        """
        storage = self.storages.require(storage_id)
        if node_id:
            self.nodes.require(node_id)
        else:
            online = [n for n in self.nodes.online_ids() if n in storage.get("nodes", {})]
            if not online:
                raise Invalid(f"storage {storage['name']!r} is on no online node",
                              code="node_offline")
            node_id = online[0]
        conn = self.nodes.connection(node_id).get()
        return storage, self.storages.backend(storage), conn, node_id

    def _changed(self, node_id: str) -> None:
        self.nodes.connection(node_id).changed()

    def users(self, storage_id: str, name: str) -> list[str]:
        return self.references.users("volume", volume_ref(storage_id, name))

    def listing(self, storage_id: str, node_id: str | None = None) -> list[dict[str, Any]]:
        _storage, backend, conn, node_id = self._target(storage_id, node_id)
        items = backend.list_volumes(conn)
        for item in items:
            item["id"] = item["name"]
            item["used_by"] = self.users(storage_id, item["name"])
        return items

    def create(self, storage_id: str, body: dict[str, Any], user: dict[str, Any]
               ) -> dict[str, Any]:
        """A task that makes an empty volume or a (copy-on-write) clone of one."""
        storage, backend, conn, node_id = self._target(storage_id, body.get("node"))
        name = body["name"]

        def run(ctx: TaskContext) -> dict[str, Any]:
            size = body.get("size_gib", 0) * GIB
            ctx.check_cancelled()
            if "clone_from" in body:
                ctx.progress(10, f"cloning {body['clone_from']} to {name}")
                vol = backend.clone_volume(conn, body["clone_from"], name, size or None)
            else:
                vol = backend.create_volume(conn, name, size, body.get("format"))
            try:
                ctx.check_cancelled()  # cancelled during the copy: the copy goes
            except BaseException:
                backend.delete_volume(conn, name)
                raise
            finally:
                self.nodes.connection(node_id).changed()
            _type, capacity, allocation = vol.info()
            return {"name": name, "capacity": capacity, "allocation": allocation}

        return self.tasks.submit("volume.create", run, title=f"Create volume {name}",
                                 owner=user["id"], subject=storage["id"],
                                 lock_key=f"volume:{storage['id']}:{name}")

    def resize(self, storage_id: str, name: str, size_gib: int,
               node_id: str | None = None) -> dict[str, Any]:
        _storage, backend, conn, node_id = self._target(storage_id, node_id)
        backend.resize_volume(conn, name, size_gib * GIB)
        self._changed(node_id)
        _type, capacity, allocation = backend.lookup_volume(conn, name).info()
        return {"name": name, "capacity": capacity, "allocation": allocation}

    def delete(self, storage_id: str, name: str, node_id: str | None = None) -> None:
        _storage, backend, conn, node_id = self._target(storage_id, node_id)
        users = self.users(storage_id, name)
        if users:
            raise Conflict(f"volume {name!r} is used by {', '.join(users)}",
                           code="volume_in_use")
        backend.lookup_volume(conn, name)
        backend.delete_volume(conn, name)
        self._changed(node_id)

    def download(self, storage_id: str, name: str, node_id: str | None = None
                 ) -> Iterator[bytes]:
        _storage, backend, conn, node_id = self._target(storage_id, node_id)
        backend.lookup_volume(conn, name)  # 404 now, not in the middle of the stream
        return backend.download(conn, name)

    def upload(self, storage_id: str, name: str, source: BinaryIO | None,
               length: int | None, node_id: str | None = None) -> dict[str, Any]:
        _storage, backend, conn, node_id = self._target(storage_id, node_id)
        if source is None or length is None or length <= 0:
            raise BadRequest("send the bytes with a Content-Length", code="length_required")
        if self.users(storage_id, name):
            raise Conflict(f"volume {name!r} is in use", code="volume_in_use")
        backend.upload(conn, name, source, length)
        self._changed(node_id)
        return {"name": name, "uploaded": length}
