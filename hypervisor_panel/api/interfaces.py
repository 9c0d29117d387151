"""A VM's interfaces and addresses: list, add (hot-plug), remove; the guest's config."""

from __future__ import annotations

from typing import Any

from ..host import PanelHost
from ..ip_pools import ADDRESS
from ..routes import ApiRequest, RouteTable, created
from ..validation import ID
from . import schemas as s
from .vms import INTERFACE

NIC = s.obj(["id", "network", "mac", "addresses"], id=s.ID, network=s.ID,
            mac={"type": "string"}, dns={"type": "array", "items": {"type": "string"}},
            options={"type": "object"},
            addresses={"type": "array", "items": s.obj(
                ["address", "prefix"], address={"type": "string"},
                prefix={"type": "integer"}, gateway=s.NULLABLE_STRING,
                pool=s.NULLABLE_STRING)})
ADD_ADDRESS = {"type": "object", "additionalProperties": False, "minProperties": 1,
               "properties": {"ip": ADDRESS, "pool": ID}}
NETWORK_CONFIG = s.obj(["version", "ethernets"], version={"const": 2},
                       ethernets={"type": "object"})


def declare(api: RouteTable, panel: PanelHost) -> None:
    vms = panel.vms

    @api.route("/vms/{vm_id}/interfaces", summary="A VM's interfaces and addresses",
               tags=("vms",), response=s.items(NIC))
    def list_interfaces(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        return {"items": vms.require(vm_id, req.user).get("interfaces", [])}

    @api.route("/vms/{vm_id}/interfaces", "POST", summary="Add an interface (hot-plugged "
               "when the VM runs and its mode allows it)", body=INTERFACE, status=201,
               response=NIC, tags=("vms",), errors=(409,))
    def add_interface(req: ApiRequest, vm_id: str):
        return created(vms.add_interface(vm_id, req.body, req.user))

    @api.route("/vms/{vm_id}/interfaces/{nic_id}", "DELETE", summary="Remove an interface "
               "and give back its addresses", tags=("vms",), errors=(409,))
    def remove_interface(req: ApiRequest, vm_id: str, nic_id: str) -> None:
        vms.remove_interface(vm_id, nic_id, req.user)

    @api.route("/vms/{vm_id}/interfaces/{nic_id}/addresses", "POST", role="admin",
               summary="Give an interface one more address", body=ADD_ADDRESS, status=201,
               response=NIC, tags=("vms",), errors=(409,))
    def add_address(req: ApiRequest, vm_id: str, nic_id: str):
        return created(vms.add_address(vm_id, nic_id, req.body, req.user))

    @api.route("/vms/{vm_id}/interfaces/{nic_id}/addresses/{address}", "DELETE",
               role="admin", summary="Take an address off an interface", tags=("vms",),
               errors=(409,))
    def remove_address(req: ApiRequest, vm_id: str, nic_id: str, address: str) -> None:
        vms.remove_address(vm_id, nic_id, address, req.user)

    @api.route("/vms/{vm_id}/network-config", summary="The guest's network configuration "
               "(cloud-init network-config v2)", tags=("vms",), response=NETWORK_CONFIG)
    def network_config(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        return vms.network_config(vm_id, req.user)
