"""IP pools and their allocations (owner of ``ip_pools`` and ``ip_allocations``).

An allocation is a record whose id is ``POOL/ADDRESS``: the store refuses a second one, so
an address is never handed out twice, also across restarts. Allocation runs under the
store lock against an in-memory index per pool (``ipam.PoolIndex``): concurrent creates
get distinct addresses or ``pool_exhausted``, and no allocation scans the pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypedDict

from . import ipam
from .errors import Conflict, Invalid, NotFound
from .events import EventLog
from .ipam import PoolError, PoolIndex, PoolSpace
from .network import Address
from .references import References
from .store import Store
from .validation import ID, NAME

POOLS = "ip_pools"
ALLOCATIONS = "ip_allocations"
ADDRESS = {"type": "string", "minLength": 2, "maxLength": 45,
           "pattern": r"^[0-9A-Fa-f.:]+$"}


def parse_address(text: str, what: str) -> ipam.IPAddress:
    """The address ``text`` names; a 422 ``invalid_address`` when it names none (the
    schema's pattern lets "00" or "B:" through)."""
    try:
        return ipam.parse_address(text, what)
    except PoolError as exc:
        raise Invalid(str(exc), code="invalid_address") from None


class PoolRecord(TypedDict, total=False):
    id: str
    name: str
    network: str
    version: int
    subnet: str
    range: dict[str, str]
    gateway: str | None
    dns: list[str]
    exclude: list[str]
    description: str
    created: float


class AllocationRecord(TypedDict, total=False):
    id: str  # POOL/ADDRESS
    pool: str
    address: str
    kind: str  # vm | reserved
    vm: str | None
    nic: str | None
    note: str
    created: float


CREATE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "network", "subnet"],
    "properties": {
        "name": NAME,
        "network": ID,
        "subnet": {"type": "string", "maxLength": 49, "pattern": r"^[0-9A-Fa-f.:]+/\d{1,3}$",
                   "description": "CIDR, e.g. 203.0.113.0/24 or 2001:db8::/64"},
        "range": {"type": "object", "additionalProperties": False,
                  "required": ["start", "end"],
                  "properties": {"start": ADDRESS, "end": ADDRESS},
                  "description": "hand out only these addresses of the subnet"},
        "gateway": ADDRESS,
        "dns": {"type": "array", "maxItems": 4, "items": ADDRESS},
        "exclude": {"type": "array", "maxItems": 256, "description":
                    "addresses or FIRST-LAST ranges never handed out",
                    "items": {"type": "string", "maxLength": 91,
                              "pattern": r"^[0-9A-Fa-f.:]+(-[0-9A-Fa-f.:]+)?$"}},
        "reserved": {"type": "array", "maxItems": 1024, "items": ADDRESS,
                     "description": "addresses held back for hosts outside the panel"},
        "description": {"type": "string", "maxLength": 500},
    },
}
PATCH_SCHEMA = {"type": "object", "additionalProperties": False, "minProperties": 1,
                "properties": {"description": {"type": "string", "maxLength": 500},
                               "dns": CREATE_SCHEMA["properties"]["dns"]}}
RESERVE_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["address"],
                  "properties": {"address": ADDRESS,
                                 "note": {"type": "string", "maxLength": 200}}}


class IPPoolService:
    """Pools, their checks and the allocator (see the module docstring)."""

    def __init__(self, store: Store, events: EventLog, references: References,
                 check_network: Callable[[str, PoolSpace], None]) -> None:
        self.store = store
        self.events = events
        self.check_network = check_network  # 422 unless the network takes such a pool
        self._indexes: dict[str, PoolIndex] = {}
        references.register("network", lambda network_id: [
            p["name"] for p in self.of_network(network_id)], "IP pool")

    # -- pools -------------------------------------------------------------------------
    def get(self, pool_id: str) -> PoolRecord | None:
        return self.store.get(POOLS, pool_id)  # type: ignore[return-value]

    def require(self, pool_id: str) -> PoolRecord:
        pool = self.get(pool_id)
        if pool is None:
            raise NotFound(f"IP pool {pool_id!r} not found", code="ip_pool_not_found")
        return pool

    def all(self) -> list[PoolRecord]:
        return self.store.all(POOLS)  # type: ignore[return-value]

    def of_network(self, network_id: str) -> list[PoolRecord]:
        return sorted(self.store.find(POOLS, network=network_id),  # type: ignore[arg-type]
                      key=lambda p: p["created"])

    def _space(self, pool: dict[str, Any]) -> PoolSpace:
        try:
            return PoolSpace.from_record(pool)
        except PoolError as exc:
            raise Invalid(str(exc), code="invalid_pool") from exc

    def create(self, data: dict[str, Any], actor: str | None = None) -> PoolRecord:
        """Check and store a pool (``data`` matches CREATE_SCHEMA)."""
        space = self._space(data)
        self.check_network(data["network"], space)
        reserved = [parse_address(a, "reserved address") for a in data.get("reserved", [])]
        for address in reserved:
            if not space.allowed(int(address)) or address.version != space.version:
                raise Invalid(f"reserved address {address} is not in the pool",
                              code="address_outside_pool")
        record = {k: v for k, v in data.items() if k != "reserved"}
        with self.store.locked():
            if self.store.find_one(POOLS, name=data["name"]):
                raise Conflict(f"IP pool {data['name']!r} already exists",
                               code="already_exists")
            for other in self.all():
                if space.overlaps(self._space(other)):
                    raise Conflict(f"{data['subnet']} overlaps IP pool {other['name']!r} "
                                   f"({other['subnet']})", code="pool_overlap")
            pool: PoolRecord = self.store.insert(POOLS, {  # type: ignore[assignment]
                "dns": [], "exclude": [], "description": "", **record,
                "version": space.version, "gateway": data.get("gateway"),
                "created": time.time()})
            for address in reserved:
                self._record(pool["id"], str(address), "reserved", note="reserved at creation")
        self.events.emit("ip_pool.create", pool["id"], actor=actor, name=pool["name"])
        return pool

    def update(self, pool_id: str, fields: dict[str, Any]) -> PoolRecord:
        self.require(pool_id)
        return self.store.update(POOLS, pool_id, fields)  # type: ignore[return-value]

    def delete(self, pool_id: str, actor: str | None = None) -> None:
        pool = self.require(pool_id)
        with self.store.locked():
            held = [a for a in self.allocations(pool_id) if a["kind"] == "vm"]
            if held:
                raise Conflict(f"IP pool {pool['name']!r} has {len(held)} address(es) in use",
                               code="pool_in_use", details=[a["address"] for a in held])
            for allocation in self.allocations(pool_id):
                self.store.delete(ALLOCATIONS, allocation["id"])
            self.store.delete(POOLS, pool_id)
            self._indexes.pop(pool_id, None)
        self.events.emit("ip_pool.delete", pool_id, actor=actor, name=pool["name"])

    # -- allocations ---------------------------------------------------------------------
    def allocations(self, pool_id: str) -> list[AllocationRecord]:
        return self.store.find(ALLOCATIONS, pool=pool_id)  # type: ignore[return-value]

    def held_by(self, vm_ids: set[str]) -> int:
        """How many addresses these VMs hold (the caller holds the store lock)."""
        return sum(1 for a in self.store.raw_values(ALLOCATIONS) if a.get("vm") in vm_ids)

    def _index(self, pool: PoolRecord) -> PoolIndex:
        index = self._indexes.get(pool["id"])
        if index is None:
            space = self._space(pool)
            taken = {int(parse_address(a["address"], "address"))
                     for a in self.store.raw_values(ALLOCATIONS) if a["pool"] == pool["id"]}
            index = self._indexes[pool["id"]] = PoolIndex(space, taken)
        return index

    def _record(self, pool_id: str, address: str, kind: str, vm: str | None = None,
                nic: str | None = None, note: str = "") -> AllocationRecord:
        """Store one allocation (the caller holds the store lock)."""
        allocation: AllocationRecord = self.store.insert(ALLOCATIONS, {  # type: ignore
            "id": f"{pool_id}/{address}", "pool": pool_id, "address": address, "kind": kind,
            "vm": vm, "nic": nic, "note": note, "created": time.time()})
        index = self._indexes.get(pool_id)
        if index is not None:
            index.take(int(parse_address(address, "address")))
        return allocation

    def allocate(self, pool_id: str, vm: str, nic: str, address: str | None = None
                 ) -> Address:
        """One address of the pool for a VM's NIC: ``address`` if given and free, else the
        next free one (409 ``pool_exhausted`` / ``address_in_use``)."""
        with self.store.locked():
            pool = self.require(pool_id)
            index = self._index(pool)
            if address is None:
                value = index.next_free()
                if value is None:
                    raise Conflict(f"IP pool {pool['name']!r} has no free address left",
                                   code="pool_exhausted")
                address = index.space.address(value)
            else:
                value = int(parse_address(address, "address"))
                if not index.space.allowed(value):
                    raise Invalid(f"{address} is not an address IP pool {pool['name']!r} "
                                  "hands out", code="address_outside_pool")
                if value in index.taken:
                    raise Conflict(f"{address} is already in use", code="address_in_use")
                address = index.space.address(value)
            self._record(pool_id, address, "vm", vm=vm, nic=nic)
        return Address(address, index.space.subnet.prefixlen,
                       pool.get("gateway"), pool_id)

    def pool_for(self, network_id: str, version: int | None, address: str | None
                 ) -> PoolRecord | None:
        """The network's pool that holds ``address``, or its first pool of ``version``
        with a free address."""
        for pool in self.of_network(network_id):
            index = self._index(pool)
            if address is not None:
                value = parse_address(address, "address")
                if value in index.space.subnet:
                    return pool
            elif pool["version"] == version and index.free() > 0:
                return pool
        return None

    def release(self, pool_id: str, address: str) -> None:
        with self.store.locked():
            self.store.delete(ALLOCATIONS, f"{pool_id}/{address}")
            index = self._indexes.get(pool_id)
            if index is not None:
                index.give_back(int(parse_address(address, "address")))

    def reserve(self, pool_id: str, address: str, note: str = "") -> AllocationRecord:
        """Hold an address back (a host outside the panel uses it)."""
        with self.store.locked():
            pool = self.require(pool_id)
            index = self._index(pool)
            value = int(parse_address(address, "address"))
            if not index.space.allowed(value):
                raise Invalid(f"{address} is not in IP pool {pool['name']!r}",
                              code="address_outside_pool")
            if value in index.taken:
                raise Conflict(f"{address} is already in use", code="address_in_use")
            return self._record(pool_id, index.space.address(value), "reserved", note=note)

    def unreserve(self, pool_id: str, address: str) -> None:
        allocation = self.store.get(ALLOCATIONS, f"{pool_id}/{address}")
        if allocation is None or allocation["kind"] != "reserved":
            raise NotFound(f"{address} is not reserved in this pool", code="not_reserved")
        self.release(pool_id, address)

    # -- views ---------------------------------------------------------------------------
    def usage(self, pool: PoolRecord) -> dict[str, int]:
        index = self._index(pool)
        kinds = [a["kind"] for a in self.allocations(pool["id"])]
        return {"size": index.space.size(), "in_use": kinds.count("vm"),
                "reserved": kinds.count("reserved"), "free": index.free()}

    def public(self, pool: PoolRecord) -> dict[str, Any]:
        return {**pool, "prefix": self._space(pool).subnet.prefixlen,
                "usage": self.usage(pool)}
