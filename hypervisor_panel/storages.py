"""Cluster-wide storages: one record, a libvirt pool on every node (owner of ``storages``).

The request schema is built from the registered back ends (``backend`` is an enum and each
back end's ``options_schema`` applies to its ``options``), so the router validates a whole
request once and the OpenAPI document shows every back end's options.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any, TypedDict

from .errors import Conflict, Invalid, NotFound, PanelError
from .events import EventLog
from .references import References
from .storage import StorageBackend
from .store import Store
from .validation import NAME, validate

if TYPE_CHECKING:
    from .nodes import NodeManager

TABLE = "storages"
USER_FIELDS = ("id", "name", "backend", "shared", "description")  # what users see


class StorageRecord(TypedDict, total=False):
    id: str
    name: str
    backend: str
    options: dict[str, Any]
    shared: bool
    description: str
    created: float
    nodes: dict[str, dict[str, Any]]  # node id -> {"state": "active"|"error", "error"}


PATCH_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {"description": {"type": "string", "maxLength": 500}},
}


def _defaults(schema: dict[str, Any]) -> dict[str, Any]:
    return {key: prop["default"] for key, prop in schema.get("properties", {}).items()
            if "default" in prop}


def create_schema(backends: dict[str, type[StorageBackend]]) -> dict[str, Any]:
    """POST /storages: name, backend (one of ``backends``), options per that back end."""
    branches = []
    for name, cls in sorted(backends.items()):
        options = copy.deepcopy(cls.options_schema)
        defaults = _defaults(options)
        options["required"] = [k for k in options.get("required", []) if k not in defaults]
        then: dict[str, Any] = {"properties": {"options": options}}
        if options["required"]:
            then["required"] = ["options"]
        branches.append({"if": {"properties": {"backend": {"const": name}},
                                "required": ["backend"]}, "then": then})
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "backend"],
        "properties": {
            "name": NAME,
            "backend": {"enum": sorted(backends), "description": "a registered back end"},
            "options": {"type": "object", "description": "per the back end's options_schema"},
            "description": {"type": "string", "maxLength": 500},
        },
        "allOf": branches,
    }


class StorageService:
    """Creates storages on every node and maps records to back-end instances."""

    def __init__(self, store: Store, nodes: NodeManager, events: EventLog,
                 references: References, backends: dict[str, type[StorageBackend]]) -> None:
        self.store = store
        self.nodes = nodes
        self.events = events
        self.references = references
        self.backends = backends
        self.create_schema = create_schema(backends)

    # -- lookups -----------------------------------------------------------------------
    def backend(self, storage: StorageRecord) -> StorageBackend:
        cls = self.backends.get(storage["backend"])
        if cls is None:
            raise Invalid(f"storage back end {storage['backend']!r} is not loaded",
                          code="unknown_backend")
        return cls(storage)

    def get(self, storage_id: str) -> StorageRecord | None:
        return self.store.get(TABLE, storage_id)  # type: ignore[return-value]

    def require(self, storage_id: str) -> StorageRecord:
        storage = self.get(storage_id)
        if storage is None:
            raise NotFound(f"storage {storage_id!r} not found", code="storage_not_found")
        return storage

    def all(self) -> list[StorageRecord]:
        return self.store.all(TABLE)  # type: ignore[return-value]

    def count(self) -> int:
        return self.store.count(TABLE)

    def for_node(self, node_id: str) -> list[StorageRecord]:
        return [s for s in self.all() if node_id in s.get("nodes", {})]

    def active_on(self, storage_id: str, node_id: str) -> bool:
        storage = self.get(storage_id)
        return bool(storage) and storage.get("nodes", {}).get(node_id, {}).get(
            "state") == "active"

    def folders(self) -> list[str]:
        """The folders of the file storages (dir paths, NFS mount points)."""
        out = []
        for storage in self.all():
            cls = self.backends.get(storage["backend"])
            folder = cls(storage).folder if cls is not None else None
            if folder:
                out.append(folder)
        return out

    def backends_info(self) -> list[dict[str, Any]]:
        """The registered back ends with their option schemas (the UI builds forms)."""
        return [{"id": cls.name, "name": cls.name, "description": cls.description,
                 "shared": cls.shared, "options_schema": cls.options_schema}
                for cls in self.backends.values()]

    # -- changes -----------------------------------------------------------------------
    def create(self, data: dict[str, Any], actor: str | None = None) -> StorageRecord:
        """Define the pool on every online node; nothing is kept on failure.

        ``data`` matches :attr:`create_schema` (the router validated it).
        """
        cls = self.backends[data["backend"]]
        options = {**_defaults(cls.options_schema), **data.get("options", {})}
        cls.check_options(options)  # e.g. a folder inside /etc: refused before any change
        with self.store.locked():
            if self.store.find_one(TABLE, name=data["name"]):
                raise Conflict(f"storage {data['name']!r} already exists", code="already_exists")
            record: StorageRecord = {
                "name": data["name"], "backend": cls.name, "options": options,
                "shared": cls.shared, "description": data.get("description", ""),
                "created": time.time(), "nodes": {},
            }
            backend = cls(record)
            done: list[str] = []
            try:
                for node_id in self.nodes.online_ids():
                    backend.ensure_pool(self.nodes.connection(node_id).get(), adopt=False)
                    done.append(node_id)
                    record["nodes"][node_id] = {"state": "active", "error": None}
            except PanelError:
                for node_id in done:
                    backend.remove_pool(self.nodes.connection(node_id).get())
                raise
            stored: StorageRecord = self.store.insert(TABLE, record)  # type: ignore[assignment]
        self.events.emit("storage.create", stored["id"], actor=actor, name=stored["name"])
        return stored

    def create_default(self, spec: dict[str, Any]) -> StorageRecord | None:
        """The storage a plugin offers at first start (validated like a request)."""
        validate(spec, self.create_schema, "default storage")
        return self.create(spec)

    def update(self, storage_id: str, fields: dict[str, Any]) -> StorageRecord:
        self.require(storage_id)
        return self.store.update(TABLE, storage_id, fields)  # type: ignore[return-value]

    def ensure_on_node(self, node_id: str) -> None:
        """Define and start every storage's pool on a node; record failures per node."""
        conn = self.nodes.connection(node_id).get()
        for storage in self.all():
            try:
                self.backend(storage).ensure_pool(conn)
                state = {"state": "active", "error": None}
            except PanelError as exc:
                state = {"state": "error", "error": exc.message}
            if storage.get("nodes", {}).get(node_id) != state:
                nodes = {**storage.get("nodes", {}), node_id: state}
                self.store.update(TABLE, storage["id"], {"nodes": nodes})

    def delete(self, storage_id: str, actor: str | None = None) -> None:
        storage = self.require(storage_id)
        self.references.refuse_if_used("storage", storage_id,
                                       f"storage {storage['name']!r}", "storage_in_use")
        backend = self.backend(storage)
        for node_id in self.nodes.online_ids():
            backend.remove_pool(self.nodes.connection(node_id).get())
        self.store.delete(TABLE, storage_id)
        self.events.emit("storage.delete", storage_id, actor=actor, name=storage["name"])

    # -- views -------------------------------------------------------------------------
    def public(self, storage: StorageRecord, admin: bool = True) -> dict[str, Any]:
        """The API view: options without secrets, per-node state and capacity. Users see
        only what they need to choose one: no options (paths, hosts), no error texts."""
        out: dict[str, Any] = dict(storage) if admin else {
            k: storage[k] for k in USER_FIELDS if k in storage}  # type: ignore[literal-required]
        cls = self.backends.get(storage["backend"])
        if cls is not None and admin:
            out["options"] = cls.public_options(storage.get("options", {}))
        per_node = {}
        for node_id in self.nodes.online_ids():
            try:
                cap = self.backend(storage).capacity(self.nodes.connection(node_id).get())
                per_node[node_id] = {"state": "active", "error": None, **cap}
            except PanelError as exc:
                per_node[node_id] = {"state": "error",
                                     "error": exc.message if admin else "unavailable"}
        out["nodes"] = per_node
        return out

    def listing(self, admin: bool = True) -> list[dict[str, Any]]:
        return [self.public(s, admin) for s in self.all()]
