"""Cluster-wide networks: one record, prepared on every node (owner of ``networks``).

Like storages, the request schema is built from the registered network modes. A network is
created only when every online node could prepare it (nothing half-applied); a node that
joins or comes back later gets it too, and a node where that fails (say, the host bridge
is missing there) shows the reason as that node's state.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any, TypedDict

from .errors import Conflict, Invalid, NotFound, PanelError
from .events import EventLog
from .ipam import PoolSpace
from .network import NetworkMode
from .references import References
from .store import Store
from .validation import NAME

if TYPE_CHECKING:
    from .nodes import NodeManager

TABLE = "networks"


class NetworkRecord(TypedDict, total=False):
    id: str
    name: str
    mode: str
    options: dict[str, Any]
    description: str
    created: float
    nodes: dict[str, dict[str, Any]]  # node id -> {"state": "active"|"error", "error"}


NETWORK_NAME = {**NAME, "pattern": r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$",
                "description": "Letters, digits, '_' and '-' (the libvirt network is hvp-NAME)"}
PATCH_SCHEMA = {"type": "object", "additionalProperties": False, "minProperties": 1,
                "properties": {"description": {"type": "string", "maxLength": 500}}}


def create_schema(modes: dict[str, type[NetworkMode]]) -> dict[str, Any]:
    """POST /networks: name, mode (one of ``modes``) and options per that mode."""
    branches = []
    for name, cls in sorted(modes.items()):
        options = copy.deepcopy(cls.options_schema)
        defaults = {k for k, p in options.get("properties", {}).items() if "default" in p}
        options["required"] = [k for k in options.get("required", []) if k not in defaults]
        then: dict[str, Any] = {"properties": {"options": options}}
        if options["required"]:
            then["required"] = ["options"]
        branches.append({"if": {"properties": {"mode": {"const": name}},
                                "required": ["mode"]}, "then": then})
    return {
        "type": "object", "additionalProperties": False, "required": ["name", "mode"],
        "properties": {"name": NETWORK_NAME,
                       "mode": {"enum": sorted(modes), "description": "a registered mode"},
                       "options": {"type": "object"},
                       "description": {"type": "string", "maxLength": 500}},
        "allOf": branches,
    }


class NetworkService:
    def __init__(self, store: Store, nodes: NodeManager, events: EventLog,
                 references: References, modes: dict[str, type[NetworkMode]]) -> None:
        self.store, self.nodes, self.events = store, nodes, events
        self.references = references
        self.modes = modes
        self.create_schema = create_schema(modes)

    # -- lookups -----------------------------------------------------------------------
    def get(self, network_id: str) -> NetworkRecord | None:
        return self.store.get(TABLE, network_id)  # type: ignore[return-value]

    def require(self, network_id: str) -> NetworkRecord:
        network = self.get(network_id)
        if network is None:
            raise NotFound(f"network {network_id!r} not found", code="network_not_found")
        return network

    def all(self) -> list[NetworkRecord]:
        return self.store.all(TABLE)  # type: ignore[return-value]

    def mode(self, network: NetworkRecord) -> NetworkMode:
        cls = self.modes.get(network["mode"])
        if cls is None:
            raise Invalid(f"network mode {network['mode']!r} is not loaded",
                          code="unknown_network_mode")
        return cls(network)

    def modes_info(self) -> list[dict[str, Any]]:
        return [{"id": cls.name, "name": cls.name, "description": cls.description,
                 "uses_ip_pools": cls.uses_ip_pools, "hotplug": cls.hotplug,
                 "options_schema": cls.options_schema,
                 "nic_options_schema": cls.nic_options_schema}
                for cls in self.modes.values()]

    def check_pool(self, network_id: str, space: PoolSpace) -> None:
        """422 unless ``network_id`` exists and its mode takes addresses from pools."""
        network = self.get(network_id)
        if network is None:
            raise Invalid(f"network {network_id!r} not found", code="network_not_found")
        mode = self.mode(network)
        if not mode.uses_ip_pools:
            raise Invalid(f"network {network['name']!r} ({network['mode']}) takes no IP "
                          "pools", code="pools_not_used")
        problem = mode.pool_problem(space.subnet)
        if problem:
            raise Invalid(problem, code="invalid_pool")

    # -- changes -----------------------------------------------------------------------
    def create(self, data: dict[str, Any], actor: str | None = None) -> NetworkRecord:
        """Prepare the network on every online node (``data`` matches create_schema)."""
        cls = self.modes[data["mode"]]
        options = {k: p["default"] for k, p in cls.options_schema.get("properties", {}).items()
                   if "default" in p}
        options.update(data.get("options", {}))
        with self.store.locked():
            if self.store.find_one(TABLE, name=data["name"]):
                raise Conflict(f"network {data['name']!r} already exists", code="already_exists")
            record: NetworkRecord = {"name": data["name"], "mode": cls.name,
                                     "options": options, "nodes": {}, "created": time.time(),
                                     "description": data.get("description", "")}
            mode, done = cls(record), []
            mode.validate_options()
            try:
                for node_id in self.nodes.online_ids():
                    mode.prepare(self.nodes.context(node_id))
                    done.append(node_id)
                    record["nodes"][node_id] = {"state": "active", "error": None}
            except PanelError:
                for node_id in done:
                    mode.cleanup(self.nodes.context(node_id))
                raise
            stored: NetworkRecord = self.store.insert(TABLE, record)  # type: ignore
        self.events.emit("network.create", stored["id"], actor=actor, name=stored["name"])
        return stored

    def update(self, network_id: str, fields: dict[str, Any]) -> NetworkRecord:
        self.require(network_id)
        return self.store.update(TABLE, network_id, fields)  # type: ignore[return-value]

    def ensure_on_node(self, node_id: str) -> None:
        """Prepare every network on a node that (re)connected; record failures per node."""
        for network in self.all():
            try:
                self.mode(network).prepare(self.nodes.context(node_id))
                state = {"state": "active", "error": None}
            except PanelError as exc:
                state = {"state": "error", "error": exc.message}
            if network.get("nodes", {}).get(node_id) != state:
                self.store.update(TABLE, network["id"],
                                  {"nodes": {**network.get("nodes", {}), node_id: state}})

    def delete(self, network_id: str, actor: str | None = None) -> None:
        network = self.require(network_id)
        self.references.refuse_if_used("network", network_id,
                                       f"network {network['name']!r}", "network_in_use")
        mode = self.mode(network)
        for node_id in self.nodes.online_ids():
            mode.cleanup(self.nodes.context(node_id))
        self.store.delete(TABLE, network_id)
        self.events.emit("network.delete", network_id, actor=actor, name=network["name"])

    def active_on(self, network_id: str, node_id: str) -> bool:
        network = self.get(network_id)
        return bool(network) and network.get("nodes", {}).get(node_id, {}).get(
            "state") == "active"
