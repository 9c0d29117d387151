"""Node routes: list, add over SSH (with host-key confirmation), change, remove."""

from __future__ import annotations

from typing import Any

from ..host import PanelHost
from ..nodes.join import CREATE_SCHEMA, HOST_KEY_REQUEST
from ..routes import ApiRequest, RouteTable, accepted, created
from . import schemas as s

PATCH = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"},
        "domain_type": {"enum": ["auto", "kvm", "qemu"],
                        "description": "auto: kvm where it works, else qemu (TCG)"},
        "maintenance": {"type": "boolean",
                        "description": "no new VMs are placed on a node in maintenance; "
                                       "turning it on migrates the node's VMs away"},
        "maintenance_reason": {"type": "string", "maxLength": 200},
    },
}


def declare(api: RouteTable, panel: PanelHost) -> None:
    nodes, joiner = panel.nodes, panel.joiner

    @api.route("/nodes", summary="Nodes with status and resources", tags=("nodes",),
               response=s.items(s.NODE_ANY))
    def list_nodes(req: ApiRequest) -> dict[str, Any]:
        return {"items": nodes.listing(req.user)}

    @api.route("/nodes/host-key", "POST", summary="Read a host's SSH key for confirmation",
               role="admin", body=HOST_KEY_REQUEST, response=s.HOST_KEY, tags=("nodes",),
               errors=(503,))
    def host_key(req: ApiRequest) -> dict[str, Any]:
        return joiner.host_key(req.body)

    @api.route("/nodes/local-libvirt", summary="Whether the local libvirtd answers and is "
               "not a node yet (then it can be added)", role="admin",
               response=s.LOCAL_LIBVIRT, tags=("nodes",))
    def local_libvirt(req: ApiRequest) -> dict[str, Any]:
        return nodes.local_candidate()

    @api.route("/nodes/local-libvirt", "POST", summary="Add the local libvirtd as a node",
               role="admin", body=s.EMPTY_BODY, status=201, response=s.NODE,
               tags=("nodes",), errors=(409,))
    def add_local_libvirt(req: ApiRequest):
        return created(nodes.public(nodes.add_local(req.user["id"])))

    @api.route("/nodes", "POST", summary="Add a node over SSH (202 + task)", role="admin",
               body=CREATE_SCHEMA, status=202, response=s.ACCEPTED, tags=("nodes",),
               errors=(409,))
    def add_node(req: ApiRequest):
        return accepted(joiner.submit(req.body, req.user))

    @api.route("/nodes/{node_id}", summary="One node", tags=("nodes",), response=s.NODE_ANY)
    def get_node(req: ApiRequest, node_id: str) -> dict[str, Any]:
        return nodes.view(nodes.require(node_id), req.user)

    @api.route("/nodes/{node_id}", "PATCH", summary="Rename a node, set its domain type or "
               "maintenance (then a task evacuates it)", role="admin", body=PATCH,
               response=s.NODE, tags=("nodes",), errors=(409,))
    def patch_node(req: ApiRequest, node_id: str) -> dict[str, Any]:
        return nodes.update(node_id, req.body, req.user)

    @api.route("/nodes/{node_id}", "DELETE", summary="Remove a node without VMs",
               role="admin", tags=("nodes",), errors=(409,))
    def delete_node(req: ApiRequest, node_id: str) -> None:
        nodes.delete(node_id, req.user["id"])
