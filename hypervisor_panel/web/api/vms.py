"""VMs: create, list, lifecycle actions, delete, console."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import BadRequest
from ...vms import CREATE_SCHEMA
from ..router import ApiRequest, accepted

if TYPE_CHECKING:
    from ...panel import Panel


def register(panel: Panel) -> None:
    api = panel.api
    vms = panel.vms

    @api.route("/vms", summary="VMs you can see, with live state", tags=("vms",))
    def list_vms(req: ApiRequest) -> dict[str, Any]:
        return {"items": vms.visible(req.user)}

    @api.route("/vms", "POST", summary="Create a VM from a VM template (202 + task)",
               body=CREATE_SCHEMA, status=202, tags=("vms",))
    def create_vm(req: ApiRequest):
        return accepted(vms.create(req.body, req.user))

    @api.route("/vms/<vm_id>", summary="One VM with live state and stats", tags=("vms",))
    def get_vm(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        return vms.public(vms.require(vm_id, req.user))

    @api.route("/vms/<vm_id>", "PATCH", summary="Change a VM's description", tags=("vms",))
    def patch_vm(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        return vms.update(vm_id, req.body, req.user)

    @api.route("/vms/<vm_id>", "DELETE", summary="Delete a VM and its disks (202 + task)",
               tags=("vms",), query={"keep_disks": "true to keep the disk volumes"})
    def delete_vm(req: ApiRequest, vm_id: str):
        keep = req.query.get("keep_disks", "false").lower()
        if keep not in ("true", "false", "1", "0"):
            raise BadRequest("keep_disks must be true or false", code="bad_query")
        return accepted(vms.delete(vm_id, req.user, keep_disks=keep in ("true", "1")))

    @api.route("/vms/<vm_id>/actions/<action>", "POST",
               summary="start | stop {timeout, force} | reboot {force} | destroy | "
                       "migrate {node} (202 + task)",
               tags=("vms",))
    def vm_action(req: ApiRequest, vm_id: str, action: str):
        return accepted(vms.action(vm_id, action, req.body, req.user))

    @api.route("/vms/<vm_id>/migration-check", summary="Why a migration to ?node= would fail",
               tags=("vms",), query={"node": "target node id"})
    def migration_check(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        vm = vms.require(vm_id, req.user)
        target = req.query.get("node")
        if not target:
            raise BadRequest("give the target node as ?node=ID", code="bad_query")
        problems = panel.migrator.problems(vm, target)
        return {"ok": not problems, "problems": problems}

    @api.route("/vms/<vm_id>/console", summary="The tail of the VM's serial console log",
               tags=("vms",))
    def console(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        return {"text": vms.console(vm_id, req.user)}
