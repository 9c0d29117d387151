"""VM snapshot routes: list, take, revert, delete (the last three are tasks)."""

from __future__ import annotations

from typing import Any

from ..host import PanelHost
from ..routes import ApiRequest, RouteTable, accepted
from ..validation import NAME
from . import schemas as s

TAKE = {"type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {"name": NAME,
                       "description": {"type": "string", "maxLength": 500}}}
SNAPSHOT = s.obj(["name", "created", "state"], name={"type": "string"},
                 description={"type": "string"}, created=s.TIME,
                 state={"enum": ["creating", "ready"]},
                 memory={"type": ["boolean", "null"],
                         "description": "the VM's memory is in it (taken while it ran)"})


def declare(api: RouteTable, panel: PanelHost) -> None:
    vms = panel.vms

    @api.route("/vms/{vm_id}/snapshots", summary="A VM's snapshots, oldest first",
               tags=("vms",), response=s.items(SNAPSHOT))
    def list_snapshots(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        return {"items": vms.snapshot_list(vm_id, req.user)}

    @api.route("/vms/{vm_id}/snapshots", "POST", summary="Take a snapshot: disks, and memory "
               "when the VM runs; qcow2 disks only (202 + task)", body=TAKE, status=202,
               response=s.ACCEPTED, tags=("vms",), errors=(409,))
    def take_snapshot(req: ApiRequest, vm_id: str):
        return accepted(vms.snapshot(vm_id, "take", req.user, body=req.body))

    @api.route("/vms/{vm_id}/snapshots/{name}/actions/revert", "POST", summary="Bring the "
               "VM back to a snapshot; its backup checkpoints are dropped (202 + task)",
               body=s.EMPTY_BODY, status=202, response=s.ACCEPTED, tags=("vms",),
               errors=(409,))
    def revert_snapshot(req: ApiRequest, vm_id: str, name: str):
        return accepted(vms.snapshot(vm_id, "revert", req.user, name=name))

    @api.route("/vms/{vm_id}/snapshots/{name}", "DELETE", summary="Delete a snapshot "
               "(202 + task)", status=202, response=s.ACCEPTED, tags=("vms",), errors=(409,))
    def delete_snapshot(req: ApiRequest, vm_id: str, name: str):
        return accepted(vms.snapshot(vm_id, "delete", req.user, name=name))
