"""Creating a VM: where it goes, whether its owner may have it, its record and task.

Checks run before anything is made; the quota check, the record and the interfaces'
addresses are taken under one store lock, so two concurrent creates cannot both pass the
last unit of a quota or get the same address.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from ..auth import Auth
from ..errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from ..events import EventLog
from ..os_template_access import visible
from ..paths import boot_path_problem
from ..settings import SettingsService
from ..store import Store
from ..tasks import TaskManager
from ..vm_templates import VMTemplateRecord, VMTemplateService
from . import placement
from .install import InstallRequest
from .nics import VMNetworking
from .provision import Provisioner
from .reconcile import Reconciler
from .records import TABLE, VMRecord
from .seed import hash_password

if TYPE_CHECKING:
    from ..nodes import NodeManager
    from ..storages import StorageService

NOT_IMPLEMENTED_YET: tuple[str, ...] = ()


class Creator:
    def __init__(self, store: Store, tasks: TaskManager, events: EventLog,
                 settings: SettingsService, nodes: NodeManager, storages: StorageService,
                 templates: VMTemplateService, users: Auth, reconciler: Reconciler,
                 provisioner: Provisioner, networking: VMNetworking) -> None:
        self.store, self.tasks, self.events = store, tasks, events
        self.settings, self.nodes, self.storages = settings, nodes, storages
        self.templates, self.users = templates, users
        self.reconciler, self.provisioner = reconciler, provisioner
        self.networking = networking
        self.os_templates: Any = None  # OSTemplateService, wired by the panel
        self.guest: Any = None  # GuestOS, wired by the VM service

    def _install(self, data: dict[str, Any], user: dict[str, Any],
                 template: VMTemplateRecord) -> tuple[dict[str, Any], InstallRequest]:
        """What to install: (fields for the VM record and the request, InstallRequest).

        An OS template sets the storage and the image to clone; an ISO boots first.
        """
        if "user_data" in data and user["role"] != "admin":
            raise Forbidden("only an admin may give user data", code="admin_only")
        chosen = self.os_templates.get(data["os_template"]) if self.os_templates and \
            "os_template" in data else None
        if chosen is not None and not visible(chosen, user):
            raise Invalid(f"OS template {data['os_template']!r} not found",
                          code="os_template_not_found")
        fields: dict[str, Any] = {"hostname": data.get("hostname") or data["name"]}
        request = InstallRequest(ssh_keys=list(data.get("ssh_keys", [])),
                                 user_data=dict(data.get("user_data", {})))
        if data.get("password"):
            request.password_hash = hash_password(data["password"])
        if "iso" in data:
            fields.update(iso=data["iso"], vnc=True, boot_order=["cdrom", "hd"])
            request.iso = data["iso"]
        if "os_template" in data:
            fields.update(self._template_fields(data, template, request))
        return fields, request

    def _recipe(self, data: dict[str, Any], user: dict[str, Any]) -> dict[str, Any] | None:
        """The recipe to run after the install (asked for, or the cluster default)."""
        if "os_template" not in data:
            if "recipe" in data:
                raise Invalid("a recipe runs in an OS installed from an OS template; give "
                              "os_template", code="recipe_needs_os_template")
            return None
        os_template = self.os_templates.get(data["os_template"]) if self.os_templates else None
        tags = list((os_template or {}).get("tags", []))
        return self.guest.check_recipe(data.get("recipe"), data.get("recipe_params", {}),
                                       tags, user)

    def _then_run(self, recipe: dict[str, Any] | None, data: dict[str, Any],
                  user: dict[str, Any]) -> Any:
        if recipe is None:
            return None

        def run(vm: VMRecord) -> dict[str, Any]:
            task = self.guest.run_recipe(vm, recipe, data.get("recipe_params", {}), user,
                                         data.get("password"))
            return {"recipe_task": task["id"]}

        return run

    def _template_fields(self, data: dict[str, Any], template: VMTemplateRecord,
                         request: InstallRequest) -> dict[str, Any]:
        os_template = self.os_templates.get(data["os_template"]) if self.os_templates else None
        if os_template is None:
            raise Invalid(f"OS template {data['os_template']!r} not found",
                          code="os_template_not_found")
        if os_template.get("state") != "ready":
            raise Conflict(f"OS template {os_template['name']!r} is "
                           f"{os_template.get('state')}", code="os_template_not_ready")
        if template["disk_gib"] < (os_template.get("min_disk_gib") or 0):
            raise Invalid(f"OS template {os_template['name']!r} needs a disk of at least "
                          f"{os_template['min_disk_gib']} GiB", code="disk_too_small")
        if template["memory_mib"] < (os_template.get("min_memory_mib") or 0):
            raise Invalid(f"OS template {os_template['name']!r} needs at least "
                          f"{os_template['min_memory_mib']} MiB of RAM",
                          code="memory_too_small")
        if data.get("storage") and data["storage"] != os_template["storage"]:
            raise Invalid(f"OS template {os_template['name']!r} lives in another storage; "
                          "leave out storage or import the template there",
                          code="template_not_in_storage")
        fields: dict[str, Any] = {"os_template": os_template["id"],
                                  "storage": os_template["storage"], "installs": 1}
        if os_template.get("kind") == "iso":
            fields.update(iso=os_template["volume"], vnc=True, boot_order=["cdrom", "hd"])
            request.iso = os_template["volume"]
        else:
            fields["image"] = os_template["volume"]
            request.configure_from(os_template)
            if request.user_data and os_template.get("config") != "cloud-init":
                raise Invalid(f"OS template {os_template['name']!r} is not configured by "
                              "cloud-init, so it takes no user_data",
                              code="user_data_unsupported")
        return fields

    # -- placement -----------------------------------------------------------------------
    def place(self, memory_mib: int, storage_id: str | None,
              exclude: set[str] | frozenset[str] = frozenset()) -> str:
        """The online node (not in maintenance) with the most memory left for VMs."""
        ratio = float(self.settings.get()["memory_overcommit"])
        placed: dict[str, int] = {}
        with self.store.locked():
            for vm in self.store.raw_values(TABLE):
                placed[vm["node"]] = placed.get(vm["node"], 0) + vm["memory_mib"]
        rooms = [placement.NodeRoom(n, self.nodes.info(n).get("memory_mib") or 0,
                                    placed.get(n, 0))
                 for n in self.nodes.placeable_ids()
                 if n not in exclude and (storage_id is None
                                          or self.storages.active_on(storage_id, n))]
        best = placement.choose_node(rooms, memory_mib, ratio)
        if best is None:
            raise Unavailable(f"no online node has {memory_mib} MiB of RAM left for a VM "
                              f"(overcommit ratio {ratio})", code="no_capacity")
        return best

    # -- create --------------------------------------------------------------------------
    def _owner(self, data: dict[str, Any], user: dict[str, Any]) -> str:
        owner = data.get("owner", user["id"])
        if owner != user["id"]:
            if user["role"] != "admin":
                raise Forbidden("only an admin may create VMs for other users",
                                code="admin_only")
            if self.users.get_user(owner) is None:
                raise Invalid(f"user {owner!r} not found", code="user_not_found")
        return owner

    def _check_quota(self, owner_id: str, template: VMTemplateRecord) -> None:
        owner = self.users.get_user(owner_id) or {}
        quota = owner.get("quota") or {}
        if not quota or owner.get("role") == "admin":
            return
        used = placement.usage_of(self.store.find(TABLE, owner=owner_id))
        extra = placement.Usage(1, template["vcpus"], template["memory_mib"],
                                template["disk_gib"])
        problem = placement.quota_problem(quota, used, extra)
        if problem:
            raise Forbidden(problem, code="quota_exceeded")

    def _where(self, data: dict[str, Any], template: VMTemplateRecord) -> tuple[str, str]:
        """(node id, storage id) for a new VM: given, or placed."""
        if data.get("storage") and self.storages.get(data["storage"]) is None:
            raise Invalid(f"storage {data['storage']!r} not found", code="storage_not_found")
        node_id = data.get("node") or self.place(template["memory_mib"], data.get("storage"))
        node = self.nodes.get(node_id)
        if node is None:
            raise Invalid(f"node {node_id!r} not found", code="node_not_found")
        if self.nodes.status(node_id) != "online":
            raise Unavailable(f"node {node['name']!r} is offline", code="node_offline")
        total = self.nodes.info(node_id).get("memory_mib")
        if total and template["memory_mib"] > total:
            raise Invalid(f"template {template['name']!r} needs {template['memory_mib']} MiB "
                          f"of RAM but node {node['name']!r} has only {total} MiB",
                          code="not_enough_memory")
        storage_id = data.get("storage") or next(
            (s["id"] for s in self.storages.for_node(node_id)), None)
        if storage_id is None or self.storages.get(storage_id) is None:
            raise Invalid(f"storage {storage_id!r} not found", code="storage_not_found")
        return node_id, storage_id

    def _check_boot(self, boot: dict[str, Any], node_id: str) -> None:
        """Kernel and initrd must be files in the boot folders (``paths.boot_dirs``: /boot,
        /var/lib/libvirt/boot, /var/lib/libvirt/images, HVP_BOOT_DIRS) or in a file
        storage's folder, symlinks followed when the node's files are this machine's:
        QEMU reads them as root, so ``/etc/shadow`` must not become a guest's kernel."""
        on_this_machine = (self.nodes.get(node_id) or {}).get("kind") != "ssh"
        folders = self.storages.folders()
        for key in ("kernel", "initrd"):
            path = boot.get(key)
            if not path:
                continue
            why = boot_path_problem(path, folders, resolve=on_this_machine)
            if why:
                raise Invalid(f"boot.{key}: {why}", code="boot_path_refused")
            if self.nodes.is_local(node_id) and not Path(path).is_file():
                raise Invalid(f"boot.{key}: {path} is not a file on the node",
                              code="file_not_found")

    def _check_sources(self, data: dict[str, Any], node_id: str, storage_id: str) -> None:
        if "boot" in data:
            self._check_boot(data["boot"], node_id)
        for field in ("image", "iso"):
            if field not in data:
                continue
            storage = self.storages.require(storage_id)
            try:
                self.storages.backend(storage).lookup_volume(
                    self.nodes.connection(node_id).get(), data[field])
            except NotFound as exc:
                raise Invalid(f"{field} {data[field]!r} not found in storage "
                              f"{storage['name']!r}", code=f"{field}_not_found") from exc

    def create(self, data: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        """Check a create request and start its task (``data`` matches the schema)."""
        for field in NOT_IMPLEMENTED_YET:
            if field in data:
                raise Invalid(f"{field} is not supported by this panel version yet",
                              code="not_supported")
        if "boot" in data and user["role"] != "admin":
            raise Forbidden("only an admin may set direct kernel boot", code="admin_only")
        chosen = "ip" in data or any("ip" in i or "ips" in i for i in data.get("interfaces", []))
        if chosen and user["role"] != "admin":
            raise Forbidden("only an admin may choose a VM's address", code="admin_only")
        owner = self._owner(data, user)
        template = self.templates.get(data["vm_template"])
        if template is None:
            raise Invalid(f"VM template {data['vm_template']!r} not found",
                          code="vm_template_not_found")
        install_fields, install = self._install(data, user, template)
        recipe = self._recipe(data, user)
        if recipe is not None:
            data = {**data, "start": True}  # a recipe runs once the guest is up
        data = {**data, **{k: v for k, v in install_fields.items()
                           if k in ("storage", "image", "iso")}}
        node_id, storage_id = self._where(data, template)
        self._check_sources(data, node_id, storage_id)
        requests = self._interface_requests(data, node_id)
        with self.store.locked():
            self._check_quota(owner, template)
            vm = self._insert(data, owner, template, node_id, storage_id, install_fields)
            try:
                nics = self.networking.plan(vm["id"], vm["name"], requests)
            except BaseException:
                self.store.delete(TABLE, vm["id"])
                raise
            if nics:
                vm = self.store.update(TABLE, vm["id"],  # type: ignore[assignment]
                                       {"interfaces": nics})
        self.reconciler.known(vm)
        task = self.tasks.submit(
            "vm.create", lambda ctx: self.provisioner.create_body(
                ctx, vm["id"], data.get("start", False), install,
                self._then_run(recipe, data, user)),
            title=f"Create VM {vm['name']}", owner=user["id"], lock_key=f"vm:{vm['id']}",
            subject=vm["id"])
        self.events.emit("vm.create", vm["id"], actor=user["id"], name=vm["name"])
        return task

    def _interface_requests(self, data: dict[str, Any], node_id: str
                            ) -> list[dict[str, Any]]:
        """``interfaces``, or the short form ``network`` (+ ``ip``); each network must be
        active on the chosen node."""
        if "network" in data:
            requests = [{"network": data["network"],
                         **({"ip": data["ip"]} if "ip" in data else {})}]
        else:
            requests = list(data.get("interfaces", []))
        for request in requests:
            network = self.networking.networks.get(request["network"])
            if network is None:
                raise Invalid(f"network {request['network']!r} not found",
                              code="network_not_found")
            if not self.networking.networks.active_on(network["id"], node_id):
                raise Unavailable(f"network {network['name']!r} is not active on the "
                                  "chosen node", code="network_unavailable")
        return requests

    def _insert(self, data: dict[str, Any], owner: str, template: VMTemplateRecord,
                node_id: str, storage_id: str, extra: dict[str, Any]) -> VMRecord:
        if self.store.find_one(TABLE, name=data["name"]):
            raise Conflict(f"a VM named {data['name']!r} already exists", code="already_exists")
        try:
            self.nodes.connection(node_id).get().lookupByName(data["name"])
        except libvirt.libvirtError:
            pass
        else:
            raise Conflict(f"the node already has a domain named {data['name']!r}",
                           code="already_exists")
        return self.store.insert(TABLE, {  # type: ignore[return-value]
            "name": data["name"], "domain_name": data["name"], "uuid": str(uuid.uuid4()),
            "owner": owner, "node": node_id, "storage": storage_id,
            "vm_template": template["id"], "memory_mib": template["memory_mib"],
            "vcpus": template["vcpus"], "cpu_shares": template.get("cpu_shares", 1024),
            "disk_gib": template["disk_gib"], "description": data.get("description", ""),
            "boot": data.get("boot"), "image": data.get("image"),
            "adopt_volume": data.get("adopt_volume"), "tags": data.get("tags", []),
            "vnc": data.get("vnc", False), "status": "creating", "disks": [], "interfaces": [],
            "created": time.time(), **{k: v for k, v in extra.items() if k != "storage"},
        })

