"""Cluster-wide storages: one record, a libvirt pool on every node."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .errors import Conflict, Invalid, NotFound, PanelError
from .storage import StorageBackend
from .validation import NAME, validate

if TYPE_CHECKING:
    from .panel import Panel

TABLE = "storages"

CREATE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "backend"],
    "properties": {
        "name": NAME,
        "backend": {"type": "string", "minLength": 1, "maxLength": 64},
        "options": {"type": "object"},
        "description": {"type": "string", "maxLength": 500},
    },
}


class StorageService:
    """Creates storages on every node and maps records to back-end instances."""

    def __init__(self, panel: Panel, backends: dict[str, type[StorageBackend]]) -> None:
        self.panel = panel
        self.store = panel.store
        self.backends = backends

    def backend(self, storage: dict[str, Any]) -> StorageBackend:
        cls = self.backends.get(storage["backend"])
        if cls is None:
            raise Invalid(f"storage back end {storage['backend']!r} is not loaded",
                          code="unknown_backend")
        return cls(storage)

    def require(self, storage_id: str) -> dict[str, Any]:
        storage = self.store.get(TABLE, storage_id)
        if storage is None:
            raise NotFound(f"storage {storage_id!r} not found", code="storage_not_found")
        return storage

    def create(self, data: dict[str, Any]) -> dict[str, Any]:
        """Validate, then define the pool on every online node; nothing is kept on failure."""
        validate(data, CREATE_SCHEMA, "storage")
        cls = self.backends.get(data["backend"])
        if cls is None:
            raise Invalid(
                f"unknown storage back end {data['backend']!r}; "
                f"available: {', '.join(sorted(self.backends))}",
                code="unknown_backend",
            )
        options = {**_defaults(cls.options_schema), **data.get("options", {})}
        validate(options, cls.options_schema, f"{cls.name} options")
        with self.store.locked():
            if self.store.find_one(TABLE, name=data["name"]):
                raise Conflict(f"storage {data['name']!r} already exists", code="already_exists")
            record = {
                "name": data["name"],
                "backend": cls.name,
                "options": options,
                "shared": cls.shared,
                "description": data.get("description", ""),
                "created": time.time(),
                "nodes": {},
            }
            backend = cls(record)
            done: list[str] = []
            try:
                for node_id in self.panel.nodes.online_ids():
                    backend.ensure_pool(self.panel.nodes.connection(node_id).get(), adopt=False)
                    done.append(node_id)
                    record["nodes"][node_id] = {"state": "active", "error": None}
            except PanelError:
                for node_id in done:
                    backend.remove_pool(self.panel.nodes.connection(node_id).get())
                raise
            return self.store.insert(TABLE, record)

    def ensure_on_node(self, node_id: str) -> None:
        """Define and start every storage's pool on a node; record failures per node."""
        conn = self.panel.nodes.connection(node_id).get()
        for storage in self.store.all(TABLE):
            try:
                self.backend(storage).ensure_pool(conn)
                state = {"state": "active", "error": None}
            except PanelError as exc:
                state = {"state": "error", "error": exc.message}
            if storage.get("nodes", {}).get(node_id) != state:
                nodes = {**storage.get("nodes", {}), node_id: state}
                self.store.update(TABLE, storage["id"], {"nodes": nodes})

    def delete(self, storage_id: str) -> None:
        storage = self.require(storage_id)
        users = self.store.find("vms", storage=storage_id)
        if users:
            raise Conflict(
                f"storage {storage['name']!r} holds disks of {len(users)} VM(s): "
                f"{', '.join(v['name'] for v in users[:5])}",
                code="storage_in_use",
            )
        backend = self.backend(storage)
        for node_id in self.panel.nodes.online_ids():
            backend.remove_pool(self.panel.nodes.connection(node_id).get())
        self.store.delete(TABLE, storage_id)

    def public(self, storage: dict[str, Any]) -> dict[str, Any]:
        """The API view: options without secrets, per-node state and capacity."""
        out = dict(storage)
        cls = self.backends.get(storage["backend"])
        if cls is not None:
            out["options"] = cls.public_options(storage.get("options", {}))
        per_node = {}
        for node_id in self.panel.nodes.online_ids():
            try:
                cap = self.backend(storage).capacity(self.panel.nodes.connection(node_id).get())
                per_node[node_id] = {"state": "active", "error": None, **cap}
            except PanelError as exc:
                per_node[node_id] = {"state": "error", "error": exc.message}
        out["nodes"] = per_node
        return out

    def for_node(self, node_id: str) -> list[dict[str, Any]]:
        return [s for s in self.store.all(TABLE) if node_id in s.get("nodes", {})]


def _defaults(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        key: prop["default"]
        for key, prop in schema.get("properties", {}).items()
        if "default" in prop
    }
