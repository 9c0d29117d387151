"""What the panel does inside a VM's guest OS: run recipes over SSH, reinstall the OS.

The panel reaches the guest as root with the access key it put into the VM's seed, and
checks the guest's host key against the one it generated (pinned from the first
connection). Where it connects comes from the VM's network modes (``reach``): the NIC's
address, or a 127.0.0.1 forward of a user-mode network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import Conflict, Invalid
from ..guest_ssh import GuestEndpoint
from ..store import Store
from ..tasks import TaskContext, TaskManager
from .guest_keys import GuestKeyStore
from .install import InstallRequest, seed_volume_name
from .lifecycle import Lifecycle
from .nics import VMNetworking
from .provision import Provisioner
from .records import TABLE, VMRecord, refuse_with_snapshots
from .seed import hash_password

if TYPE_CHECKING:
    from ..nodes import NodeManager
    from ..recipe_service import RecipeService
    from ..storages import StorageService

SSH_PORT = 22


class GuestOS:
    def __init__(self, store: Store, tasks: TaskManager, nodes: NodeManager,
                 storages: StorageService, networking: VMNetworking, keys: GuestKeyStore,
                 lifecycle: Lifecycle, provisioner: Provisioner) -> None:
        self.store, self.tasks, self.nodes, self.storages = store, tasks, nodes, storages
        self.networking, self.keys = networking, keys
        self.lifecycle, self.provisioner = lifecycle, provisioner
        self.recipes: RecipeService | None = None
        self.os_templates: Any = None

    # -- reaching the guest ------------------------------------------------------------
    def endpoint(self, vm: VMRecord) -> GuestEndpoint:
        """Where and how the panel logs in to the guest (409 when it cannot)."""
        if not vm.get("os_template"):
            raise Conflict(f"VM {vm['name']!r} was not installed from an OS template, so the "
                           "panel has no key to log in to it", code="guest_unreachable")
        local = self.nodes.require(vm["node"]).get("kind") != "ssh"
        for network, nic in self.networking.nics(vm):
            hit = self.networking.networks.mode(network).reach(nic, SSH_PORT, local)
            if hit is not None:
                keys = self.keys.for_vm(vm["id"], vm["name"])
                return GuestEndpoint(hit[0], hit[1], "root", keys.access_key_path,
                                     " ".join(keys.host_public.split()[:2]))
        raise Conflict(f"the panel cannot reach the SSH port of VM {vm['name']!r}: give it "
                       "an address, or a forward of guest port 22", code="guest_unreachable")

    def template_tags(self, vm: VMRecord) -> list[str] | None:
        template = self.os_templates.get(vm["os_template"]) if (
            self.os_templates and vm.get("os_template")) else None
        return list(template.get("tags", [])) if template else None

    # -- recipes -----------------------------------------------------------------------
    def check_recipe(self, recipe: str | None, params: dict[str, Any], tags: list[str] | None,
                     user: dict[str, Any]) -> dict[str, Any] | None:
        """The recipe a create asked for (or the cluster default), checked before anything
        is made: compatible with the OS, allowed to the user, parameters well typed."""
        if self.recipes is None or (recipe is None and not tags):
            return None
        chosen = self.recipes.choose(recipe, tags, user)
        if chosen is not None:
            self.recipes.check_params(chosen, params)
        return chosen

    def run_recipe(self, vm: VMRecord, recipe: str | dict[str, Any], params: dict[str, Any],
                   user: dict[str, Any], password: str | None = None) -> dict[str, Any]:
        if self.recipes is None:
            raise Invalid("recipes are not available", code="not_supported")
        return self.recipes.run(self.endpoint(vm), recipe, params, user, vm["id"],
                                template_tags=self.template_tags(vm),
                                secrets=[password] if password else ())

    # -- reinstall ---------------------------------------------------------------------
    def reinstall(self, vm: VMRecord, body: dict[str, Any], user: dict[str, Any]
                  ) -> dict[str, Any]:
        """A task that replaces the VM's disk with a fresh clone of an OS template and boots
        it with a new seed; its addresses, MACs and host key stay."""
        refuse_with_snapshots(vm, "reinstall it")
        template = self.os_templates.get(body["os_template"]) if self.os_templates else None
        if template is None or template.get("state") != "ready" or template.get("kind") == "iso":
            raise Invalid(f"OS template {body['os_template']!r} is not a ready disk image",
                          code="os_template_not_found")
        if template["storage"] != vm["storage"]:
            raise Invalid("the OS template lives in another storage than the VM's disk",
                          code="template_not_in_storage")
        if vm["disk_gib"] < (template.get("min_disk_gib") or 0):
            raise Invalid(f"OS template {template['name']!r} needs a disk of at least "
                          f"{template['min_disk_gib']} GiB", code="disk_too_small")
        recipe = self.check_recipe(body.get("recipe"), body.get("recipe_params", {}),
                                   list(template.get("tags", [])), user)
        request = InstallRequest(ssh_keys=list(body.get("ssh_keys", [])))
        request.configure_from(template)
        if body.get("password"):
            request.password_hash = hash_password(body["password"])
        return self.tasks.submit(
            "vm.reinstall", lambda ctx: self._reinstall(ctx, vm["id"], template, request,
                                                        recipe, body, user),
            title=f"Reinstall VM {vm['name']}", owner=user["id"], lock_key=f"vm:{vm['id']}",
            subject=vm["id"])

    def _reinstall(self, ctx: TaskContext, vm_id: str, template: dict[str, Any],
                   request: InstallRequest, recipe: dict[str, Any] | None,
                   body: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        vm: VMRecord = self.store.require(TABLE, vm_id, "VM")  # type: ignore[assignment]
        conn = self.nodes.connection(vm["node"]).get()
        backend = self.storages.backend(self.storages.require(vm["storage"]))
        ctx.progress(5, "powering off")
        self.lifecycle.destroy(vm)
        main = next(d for d in vm["disks"] if d.get("device", "disk") == "disk")
        ctx.progress(20, f"replacing the disk with a clone of {template['name']}")
        backend.delete_volume(conn, main["volume"])
        backend.clone_volume(conn, template["volume"], main["volume"], vm["disk_gib"] * 1024**3)
        vm = self.store.update(TABLE, vm_id, {  # type: ignore[assignment]
            "os_template": template["id"], "image": template["volume"],
            "installs": vm.get("installs", 0) + 1,
            "disks": [{**main, "image": template["volume"]}]})
        disks = list(vm["disks"])
        for _disk, record in self.provisioner.installer.cdroms(ctx, backend, conn, vm, request):
            disks.append(record)
        vm = self.store.update(TABLE, vm_id, {"disks": disks})  # type: ignore[assignment]
        ctx.progress(70, "defining the domain and starting it")
        self.provisioner.redefine(vm)
        self.lifecycle.start(vm, ctx)
        result: dict[str, Any] = {"vm": vm_id, "os_template": template["id"],
                                  "seed": seed_volume_name(vm) if request.seed else None}
        if recipe is not None:
            task = self.run_recipe(vm, recipe, body.get("recipe_params", {}), user,
                                   body.get("password"))
            ctx.log(f"recipe {recipe['name']} runs in task {task['id']}")
            result["recipe_task"] = task["id"]
        return result
