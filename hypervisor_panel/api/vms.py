"""VM routes: create, list, view, change, delete, lifecycle actions, migration, console."""

from __future__ import annotations

from typing import Any

from ..host import PanelHost
from ..ip_pools import ADDRESS
from ..routes import ApiRequest, Query, RouteTable, accepted
from ..validation import ID, NAME
from . import schemas as s
from .recipes import PARAMS, RUN_BODY

#: A plain absolute path: no "." or ".." component, no "//" (the VM service also confines it).
BOOT_PATH = {"type": "string",
             "pattern": r"^/(?!.*//)(?!(.*/)?\.{1,2}(/|$))[A-Za-z0-9._/+-]{1,255}$"}
RECIPE_REF = RUN_BODY["properties"]["recipe"]
SSH_KEY = {"type": "string", "maxLength": 16384,
           "pattern": r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|"
                      r"sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( [^\n\r]{0,200})?$"}
INTERFACE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["network"],
    "properties": {
        "network": ID,
        "ip": {**ADDRESS, "description": "this address (admins only)"},
        "ips": {"type": "array", "maxItems": 8, "items": ADDRESS,
                "description": "these addresses (admins only)"},
        "options": {"type": "object", "description": "per the mode's nic_options_schema"},
    },
}
TAGS = {"type": "array", "maxItems": 32, "uniqueItems": True,
        "description": "labels (backup schedules select VMs by tag)",
        "items": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}}
CREATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "vm_template"],
    "allOf": [{"not": {"required": ["network", "interfaces"]}},
              {"not": {"required": ["os_template", "image"]}},
              {"not": {"required": ["os_template", "iso"]}},
              {"not": {"required": ["boot", "os_template"]}}],
    "dependentRequired": {"ip": ["network"]},
    "properties": {
        "name": NAME,
        "vm_template": ID,
        "node": ID,
        "storage": ID,
        "os_template": {**ID, "description": "install the OS from this template (its disk "
                                              "image is cloned; cloud-init configures it)"},
        "iso": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                "description": "boot this ISO volume of the VM's storage (an installer), "
                               "with a VNC display"},
        "hostname": {"type": "string", "pattern": r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
                     "description": "the guest's hostname (default: the VM's name)"},
        "ssh_keys": {"type": "array", "maxItems": 16, "items": SSH_KEY,
                     "description": "public keys allowed to log in as root"},
        "password": {"type": "string", "minLength": 8, "maxLength": 256, "writeOnly": True,
                     "description": "root's password; only its hash reaches the guest, the "
                                    "panel keeps neither"},
        "user_data": {"type": "object", "description": "extra cloud-config (admins only)"},
        "recipe_params": PARAMS,
        "image": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                  "description": "A volume in the VM's storage to clone the disk from "
                                 "(copy-on-write where the storage allows)"},
        "recipe": {**RECIPE_REF, "description": "a recipe (id or internal name) to run once "
                                                 "the OS is up (needs os_template)"},
        "network": {**ID, "description": "one interface on this network (short form of "
                                          "interfaces)"},
        "ip": {**ADDRESS, "description": "with network: this address (admins only)"},
        "interfaces": {"type": "array", "maxItems": 8, "items": INTERFACE,
                       "description": "the VM's interfaces (instead of network/ip)"},
        "owner": ID,
        "description": {"type": "string", "maxLength": 500},
        "tags": TAGS,
        "start": {"type": "boolean", "description": "Start the VM once it is created"},
        "vnc": {"type": "boolean"},
        "boot": {
            "type": "object",
            "description": "Direct kernel boot (admins only): files on the node",
            "additionalProperties": False,
            "required": ["kernel"],
            "properties": {
                "kernel": BOOT_PATH,
                "initrd": BOOT_PATH,
                "cmdline": {"type": "string", "maxLength": 512,
                            "pattern": r"^[A-Za-z0-9 ._,:=/+@-]*$"},
            },
        },
    },
}
PATCH = {"type": "object", "additionalProperties": False, "minProperties": 1,
         "properties": {"description": {"type": "string", "maxLength": 500},
                        "tags": TAGS}}
EMPTY = {"type": "object", "additionalProperties": False, "properties": {}}
ACTION_BODIES = {
    "start": EMPTY,
    "stop": {"type": "object", "additionalProperties": False, "properties": {
        "timeout": {"type": "integer", "minimum": 0, "maximum": 3600,
                    "description": "seconds to wait for an ACPI shutdown (default 60)"},
        "force": {"type": "boolean", "description": "power off at once"}}},
    "reboot": {"type": "object", "additionalProperties": False,
               "properties": {"force": {"type": "boolean"}}},
    "destroy": EMPTY,
}
MIGRATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["node"],
    "properties": {
        "node": ID,
        "max_downtime_ms": {"type": "integer", "minimum": 10, "maximum": 60000},
        "max_bandwidth_mib": {"type": "integer", "minimum": 1, "maximum": 100000,
                              "description": "bandwidth limit of a live migration, MiB/s"},
    },
}
REINSTALL = {
    "type": "object",
    "additionalProperties": False,
    "required": ["os_template"],
    "properties": {
        "os_template": ID,
        "recipe": RECIPE_REF,
        "recipe_params": PARAMS,
        "ssh_keys": {"type": "array", "maxItems": 16, "items": SSH_KEY},
        "password": {"type": "string", "minLength": 8, "maxLength": 256, "writeOnly": True},
    },
}
ACTION_SUMMARIES = {"start": "Start (or resume) a VM", "stop": "Stop a VM: ACPI, then "
                    "power off after the timeout", "reboot": "Reboot a VM",
                    "destroy": "Power a VM off at once"}


def declare(api: RouteTable, panel: PanelHost) -> None:
    vms = panel.vms

    @api.route("/vms", summary="VMs you can see, with live state", tags=("vms",),
               response=s.items(s.VM))
    def list_vms(req: ApiRequest) -> dict[str, Any]:
        return {"items": vms.visible(req.user)}

    @api.route("/vms", "POST", summary="Create a VM from a VM template (202 + task)",
               body=CREATE, status=202, response=s.ACCEPTED, tags=("vms",),
               errors=(409, 503))
    def create_vm(req: ApiRequest):
        return accepted(vms.create(req.body, req.user))

    @api.route("/vms/{vm_id}", summary="One VM with live state and stats", tags=("vms",),
               response=s.VM)
    def get_vm(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        return vms.view(vm_id, req.user)

    @api.route("/vms/{vm_id}", "PATCH", summary="Change a VM's description", body=PATCH,
               response=s.VM, tags=("vms",))
    def patch_vm(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        return vms.update(vm_id, req.body, req.user)

    @api.route("/vms/{vm_id}", "DELETE", summary="Delete a VM and its disks (202 + task)",
               status=202, response=s.ACCEPTED, tags=("vms",), errors=(409,),
               query=[Query("keep_disks", {"type": "boolean", "default": False},
                            "true keeps the disk volumes")])
    def delete_vm(req: ApiRequest, vm_id: str):
        return accepted(vms.delete(vm_id, req.user, keep_disks=req.query["keep_disks"]))

    for action, body in ACTION_BODIES.items():
        _declare_action(api, panel, action, body)
    _declare_guest(api, panel)

    @api.route("/vms/{vm_id}/actions/migrate", "POST", summary="Move a VM to another node "
               "(live when it runs; 202 + task)", body=MIGRATE, status=202,
               response=s.ACCEPTED, tags=("vms",), errors=(409, 503))
    def migrate_vm(req: ApiRequest, vm_id: str):
        return accepted(vms.migrate(vm_id, req.body, req.user))

    @api.route("/vms/{vm_id}/migration-check", summary="Why a migration to ?node= would "
               "fail", tags=("vms",), response=s.MIGRATION_CHECK,
               query=[Query("node", {"type": "string", "pattern": ID["pattern"]},
                            "target node id", required=True)])
    def migration_check(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        return vms.migration_check(vm_id, req.query["node"], req.user)

    @api.route("/vms/{vm_id}/console", summary="The tail of the VM's serial console log "
               "(local node only)", tags=("vms",), response=s.CONSOLE, errors=(422,))
    def console(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        return {"text": vms.console(vm_id, req.user)}


def _declare_guest(api: RouteTable, panel: PanelHost) -> None:
    """Actions inside the guest OS: recipes and reinstalls."""
    vms = panel.vms

    @api.route("/vms/{vm_id}/actions/run-recipe", "POST", summary="Run a recipe in the "
               "guest over SSH (202 + task; re-runnable)", body=RUN_BODY, status=202,
               response=s.ACCEPTED, tags=("vms",), errors=(409,))
    def run_recipe(req: ApiRequest, vm_id: str):
        return accepted(vms.run_recipe(vm_id, req.body, req.user))

    @api.route("/vms/{vm_id}/actions/reinstall", "POST", summary="Reinstall the OS from a "
               "template: disk replaced, addresses kept (202 + task)", body=REINSTALL,
               status=202, response=s.ACCEPTED, tags=("vms",), errors=(409,))
    def reinstall_vm(req: ApiRequest, vm_id: str):
        return accepted(vms.reinstall(vm_id, req.body, req.user))


def _declare_action(api: RouteTable, panel: PanelHost, action: str, body: dict) -> None:
    def handler(req: ApiRequest, vm_id: str):
        return accepted(panel.vms.action(vm_id, action, req.body, req.user))

    handler.__name__ = f"{action}_vm"
    api.route(f"/vms/{{vm_id}}/actions/{action}", "POST",
              summary=f"{ACTION_SUMMARIES[action]} (202 + task)", body=body, status=202,
              response=s.ACCEPTED, tags=("vms",), errors=(409, 503))(handler)
