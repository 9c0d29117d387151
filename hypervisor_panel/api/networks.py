"""Network and IP pool routes (admin); what users may see of them."""

from __future__ import annotations

from typing import Any

from ..host import PanelHost
from ..ip_pools import CREATE_SCHEMA as POOL_CREATE
from ..ip_pools import PATCH_SCHEMA as POOL_PATCH
from ..ip_pools import RESERVE_SCHEMA
from ..networks import PATCH_SCHEMA as NETWORK_PATCH
from ..routes import ApiRequest, RouteTable, created
from . import schemas as s

NETWORK = s.obj(["id", "name", "mode", "nodes"], id=s.ID, name={"type": "string"},
                mode={"type": "string"}, options={"type": "object"},
                nodes={"type": "object"}, description={"type": "string"})
NETWORK_USER = s.obj(["id", "name", "mode"], id=s.ID, name={"type": "string"},
                     mode={"type": "string"})
MODE = s.obj(["id", "name", "options_schema", "nic_options_schema"], id=s.ID,
             name={"type": "string"}, description={"type": "string"},
             uses_ip_pools={"type": "boolean"}, hotplug={"type": "boolean"},
             options_schema={"type": "object"}, nic_options_schema={"type": "object"})
POOL = s.obj(["id", "name", "network", "version", "subnet", "prefix", "usage"], id=s.ID,
             name={"type": "string"}, network=s.ID, version={"enum": [4, 6]},
             subnet={"type": "string"}, prefix={"type": "integer"},
             gateway=s.NULLABLE_STRING, usage={"type": "object"})
ALLOCATION = s.obj(["id", "pool", "address", "kind"], id={"type": "string"}, pool=s.ID,
                   address={"type": "string"}, kind={"enum": ["vm", "reserved"]},
                   vm=s.NULLABLE_STRING, nic=s.NULLABLE_STRING, note={"type": "string"})


def declare(api: RouteTable, panel: PanelHost) -> None:
    _declare_networks(api, panel)
    _declare_pools(api, panel)


def _declare_networks(api: RouteTable, panel: PanelHost) -> None:
    networks = panel.networks

    @api.route("/network-modes", summary="Registered network modes and option schemas",
               tags=("networks",), response=s.items(MODE))
    def list_modes(req: ApiRequest) -> dict[str, Any]:
        return {"items": networks.modes_info()}

    @api.route("/networks", summary="Networks with per-node state (users: names and modes)",
               tags=("networks",), response=s.items({"anyOf": [NETWORK, NETWORK_USER]}))
    def list_networks(req: ApiRequest) -> dict[str, Any]:
        items = networks.all()
        if not req.is_admin:
            return {"items": [{k: n[k] for k in ("id", "name", "mode")} for n in items]}
        return {"items": items}

    @api.route("/networks", "POST", summary="Create a network on every node", role="admin",
               body=networks.create_schema, status=201, response=NETWORK,
               tags=("networks",), errors=(409, 503))
    def create_network(req: ApiRequest):
        return created(networks.create(req.body, req.user["id"]))

    @api.route("/networks/{network_id}", summary="One network", role="admin",
               response=NETWORK, tags=("networks",))
    def get_network(req: ApiRequest, network_id: str) -> dict[str, Any]:
        return networks.require(network_id)

    @api.route("/networks/{network_id}", "PATCH", summary="Change a network's description",
               role="admin", body=NETWORK_PATCH, response=NETWORK, tags=("networks",))
    def patch_network(req: ApiRequest, network_id: str) -> dict[str, Any]:
        return networks.update(network_id, req.body)

    @api.route("/networks/{network_id}", "DELETE", summary="Delete a network no VM or IP "
               "pool uses", role="admin", tags=("networks",), errors=(409,))
    def delete_network(req: ApiRequest, network_id: str) -> None:
        networks.delete(network_id, req.user["id"])


def _declare_pools(api: RouteTable, panel: PanelHost) -> None:
    pools = panel.ip_pools

    @api.route("/ip-pools", summary="IP pools with their usage", role="admin",
               response=s.items(POOL), tags=("ip-pools",))
    def list_pools(req: ApiRequest) -> dict[str, Any]:
        return {"items": [pools.public(p) for p in pools.all()]}

    @api.route("/ip-pools", "POST", summary="Create an IP pool on a network", role="admin",
               body=POOL_CREATE, status=201, response=POOL, tags=("ip-pools",),
               errors=(409,))
    def create_pool(req: ApiRequest):
        return created(pools.public(pools.create(req.body, req.user["id"])))

    @api.route("/ip-pools/{pool_id}", summary="One IP pool", role="admin", response=POOL,
               tags=("ip-pools",))
    def get_pool(req: ApiRequest, pool_id: str) -> dict[str, Any]:
        return pools.public(pools.require(pool_id))

    @api.route("/ip-pools/{pool_id}", "PATCH", summary="Change an IP pool's DNS or "
               "description", role="admin", body=POOL_PATCH, response=POOL,
               tags=("ip-pools",))
    def patch_pool(req: ApiRequest, pool_id: str) -> dict[str, Any]:
        return pools.public(pools.update(pool_id, req.body))

    @api.route("/ip-pools/{pool_id}", "DELETE", summary="Delete an IP pool with no address "
               "in use", role="admin", tags=("ip-pools",), errors=(409,))
    def delete_pool(req: ApiRequest, pool_id: str) -> None:
        pools.delete(pool_id, req.user["id"])

    @api.route("/ip-pools/{pool_id}/allocations", summary="Addresses in use or reserved",
               role="admin", response=s.items(ALLOCATION), tags=("ip-pools",))
    def list_allocations(req: ApiRequest, pool_id: str) -> dict[str, Any]:
        pools.require(pool_id)
        return {"items": sorted(pools.allocations(pool_id), key=lambda a: a["created"])}

    @api.route("/ip-pools/{pool_id}/reservations", "POST", summary="Reserve an address",
               role="admin", body=RESERVE_SCHEMA, status=201, response=ALLOCATION,
               tags=("ip-pools",), errors=(409,))
    def reserve(req: ApiRequest, pool_id: str):
        return created(pools.reserve(pool_id, req.body["address"], req.body.get("note", "")))

    @api.route("/ip-pools/{pool_id}/reservations/{address}", "DELETE",
               summary="Release a reserved address", role="admin", tags=("ip-pools",))
    def unreserve(req: ApiRequest, pool_id: str, address: str) -> None:
        pools.unreserve(pool_id, address)
