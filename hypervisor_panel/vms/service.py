"""The VM service: the one entry point for VMs (owner of the ``vms`` table).

A thin facade over placement (pure), provisioning, lifecycle, reconciliation and migration.
Request bodies are validated by the router against the schemas in ``api/vms.py``; this
layer checks what a schema cannot (existence, permissions, capacity, state).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from ..auth import Auth
from ..errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from ..events import EventLog
from ..references import References
from ..settings import SettingsService
from ..store import Store
from ..tasks import TaskManager
from ..virt.domain_xml import serial_log_path
from ..vm_templates import VMTemplateRecord, VMTemplateService
from ..volumes import volume_ref
from . import placement
from .lifecycle import Lifecycle
from .migration import Migrator
from .provision import PrepareDomain, Provisioner
from .reconcile import Reconciler
from .records import TABLE, VMRecord

if TYPE_CHECKING:
    from ..nodes import NodeManager
    from ..storages import StorageService

# action -> the states it may start from
ACTIONS = {
    "start": ("stopped", "crashed", "paused"),
    "stop": ("running", "paused", "stopping"),
    "reboot": ("running",),
    "destroy": ("running", "paused", "stopping", "crashed"),
}
NOT_IMPLEMENTED_YET = ("os_template", "recipe", "network")


class VMService:
    def __init__(self, store: Store, tasks: TaskManager, events: EventLog,
                 settings: SettingsService, nodes: NodeManager, storages: StorageService,
                 templates: VMTemplateService, users: Auth, references: References,
                 prepare_domain: PrepareDomain) -> None:
        self.store, self.tasks, self.events = store, tasks, events
        self.settings, self.nodes, self.storages = settings, nodes, storages
        self.templates, self.users = templates, users
        self.reconciler = Reconciler(store, nodes, events)
        self.lifecycle = Lifecycle(store, nodes, self.reconciler)
        self.provisioner = Provisioner(store, nodes, storages, self.reconciler,
                                       self.lifecycle, prepare_domain)
        self.migrator = Migrator(store, nodes, storages, tasks, self.reconciler,
                                 self.lifecycle, self.place)
        for kind, finder in (("storage", self._using_storage), ("vm_template",
                             self._using_template), ("node", self._on_node),
                             ("user", self._owned_by), ("volume", self._using_volume)):
            references.register(kind, finder, "VM")

    # -- who uses what (for the owners' delete checks) ------------------------------------
    def _names(self, match: Any) -> list[str]:
        with self.store.locked():
            return [v["name"] for v in self.store.raw_values(TABLE) if match(v)]

    def _using_storage(self, storage_id: str) -> list[str]:
        return self._names(lambda v: v.get("storage") == storage_id
                           or any(d["storage"] == storage_id for d in v.get("disks", [])))

    def _using_template(self, template_id: str) -> list[str]:
        return self._names(lambda v: v.get("vm_template") == template_id)

    def _on_node(self, node_id: str) -> list[str]:
        return self._names(lambda v: v.get("node") == node_id)

    def _owned_by(self, user_id: str) -> list[str]:
        return self._names(lambda v: v.get("owner") == user_id)

    def _using_volume(self, ref: str) -> list[str]:
        return self._names(lambda v: any(
            ref in (volume_ref(d["storage"], d["volume"]),
                    volume_ref(d["storage"], d.get("image") or ""))
            for d in v.get("disks", [])))

    # -- views ---------------------------------------------------------------------------
    def public(self, vm: VMRecord) -> dict[str, Any]:
        return self.reconciler.public(vm)

    def state_of(self, vm: VMRecord) -> tuple[str, dict[str, Any]]:
        return self.reconciler.state_of(vm)

    def visible(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        admin = user["role"] == "admin"
        caches = self.nodes.domain_caches()
        public = self.reconciler.public
        with self.store.locked():  # public() copies each record once
            return [public(v, caches) for v in self.store.raw_values(TABLE)
                    if admin or v.get("owner") == user["id"]]

    def require(self, vm_id: str, user: dict[str, Any]) -> VMRecord:
        vm = self.store.get(TABLE, vm_id)
        if vm is None or (user["role"] != "admin" and vm.get("owner") != user["id"]):
            raise NotFound(f"VM {vm_id!r} not found", code="vm_not_found")
        return vm  # type: ignore[return-value]

    def view(self, vm_id: str, user: dict[str, Any]) -> dict[str, Any]:
        return self.public(self.require(vm_id, user))

    def on_node(self, node_id: str) -> list[VMRecord]:
        return self.store.find(TABLE, node=node_id)  # type: ignore[return-value]

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
        quota = (self.users.get_user(owner_id) or {}).get("quota") or {}
        if not quota:
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

    def _check_sources(self, data: dict[str, Any], node_id: str, storage_id: str) -> None:
        if "boot" in data and self.nodes.is_local(node_id):
            for key in ("kernel", "initrd"):
                path = data["boot"].get(key)
                if path and not Path(path).is_file():
                    raise Invalid(f"boot.{key}: {path} is not a file on the node",
                                  code="file_not_found")
        if "image" in data:
            storage = self.storages.require(storage_id)
            try:
                self.storages.backend(storage).lookup_volume(
                    self.nodes.connection(node_id).get(), data["image"])
            except NotFound as exc:
                raise Invalid(f"image {data['image']!r} not found in storage "
                              f"{storage['name']!r}", code="image_not_found") from exc

    def create(self, data: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        """Check a create request and start its task (``data`` matches the schema)."""
        for field in NOT_IMPLEMENTED_YET:
            if field in data:
                raise Invalid(f"{field} is not supported by this panel version yet",
                              code="not_supported")
        if "boot" in data and user["role"] != "admin":
            raise Forbidden("only an admin may set direct kernel boot", code="admin_only")
        owner = self._owner(data, user)
        template = self.templates.get(data["vm_template"])
        if template is None:
            raise Invalid(f"VM template {data['vm_template']!r} not found",
                          code="vm_template_not_found")
        node_id, storage_id = self._where(data, template)
        self._check_sources(data, node_id, storage_id)
        with self.store.locked():
            self._check_quota(owner, template)
            vm = self._insert(data, owner, template, node_id, storage_id)
        self.reconciler.known(vm)
        task = self.tasks.submit(
            "vm.create", lambda ctx: self.provisioner.create_body(ctx, vm["id"],
                                                                  data.get("start", False)),
            title=f"Create VM {vm['name']}", owner=user["id"], lock_key=f"vm:{vm['id']}",
            subject=vm["id"])
        self.events.emit("vm.create", vm["id"], actor=user["id"], name=vm["name"])
        return task

    def _insert(self, data: dict[str, Any], owner: str, template: VMTemplateRecord,
                node_id: str, storage_id: str) -> VMRecord:
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
            "vnc": data.get("vnc", False), "status": "creating", "disks": [],
            "created": time.time(),
        })

    # -- actions -------------------------------------------------------------------------
    def action(self, vm_id: str, action: str, body: dict[str, Any], user: dict[str, Any]
               ) -> dict[str, Any]:
        """Start a lifecycle task (``body`` matches the action's schema)."""
        vm = self.require(vm_id, user)
        if vm.get("status") != "ok":
            raise Conflict(f"VM {vm['name']!r} is {vm.get('status')}", code="vm_busy")
        state, _ = self.state_of(vm)
        if state == "unknown":
            raise Unavailable("the VM's node is offline", code="node_offline")
        if state == "missing":
            raise Conflict(f"VM {vm['name']!r} has no domain on its node",
                           code="domain_missing")
        if state not in ACTIONS[action]:
            raise Conflict(f"cannot {action} VM {vm['name']!r}: it is {state}",
                           code="invalid_state")
        func = getattr(self.lifecycle, action)
        task = self.tasks.submit(
            f"vm.{action}",
            lambda ctx: func(self.store.require(TABLE, vm_id), ctx=ctx, **body),
            title=f"{action.capitalize()} VM {vm['name']}", owner=user["id"],
            lock_key=f"vm:{vm_id}", subject=vm_id)
        self.events.emit(f"vm.{action}", vm_id, actor=user["id"], name=vm["name"])
        return task

    def migrate(self, vm_id: str, body: dict[str, Any], user: dict[str, Any]
                ) -> dict[str, Any]:
        vm = self.require(vm_id, user)
        task = self.migrator.submit(vm, body, user)
        self.events.emit("vm.migrate", vm_id, actor=user["id"], name=vm["name"],
                         to=body["node"])
        return task

    def migration_check(self, vm_id: str, target_id: str, user: dict[str, Any]
                        ) -> dict[str, Any]:
        problems = self.migrator.problems(self.require(vm_id, user), target_id)
        return {"ok": not problems, "problems": problems}

    def evacuate(self, node_id: str, user: dict[str, Any]) -> dict[str, Any]:
        return self.migrator.evacuate(node_id, user)

    # -- update / delete ----------------------------------------------------------------
    def update(self, vm_id: str, data: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        self.require(vm_id, user)
        return self.public(self.store.update(TABLE, vm_id, data))  # type: ignore[arg-type]

    def delete(self, vm_id: str, user: dict[str, Any], keep_disks: bool = False
               ) -> dict[str, Any]:
        vm = self.require(vm_id, user)
        if vm.get("status") == "creating":
            raise Conflict(f"VM {vm['name']!r} is still being created", code="vm_busy")
        task = self.tasks.submit(
            "vm.delete", lambda ctx: self._delete_body(vm_id, keep_disks),
            title=f"Delete VM {vm['name']}", owner=user["id"], lock_key=f"vm:{vm_id}",
            subject=vm_id)
        self.events.emit("vm.delete", vm_id, actor=user["id"], name=vm["name"])
        return task

    def _delete_body(self, vm_id: str, keep_disks: bool) -> dict[str, Any]:
        vm: VMRecord = self.store.require(TABLE, vm_id, "VM")  # type: ignore[assignment]
        conn = self.nodes.connection(vm["node"]).get()
        self.lifecycle.undefine(conn, vm)
        kept = []
        for disk in vm.get("disks", []):
            storage = self.storages.get(disk["storage"])
            if keep_disks:
                kept.append(disk)
            elif storage is not None:
                self.storages.backend(storage).delete_volume(conn, disk["volume"])
        if self.nodes.is_local(vm["node"]):
            # The serial log is the panel's file (DomainBuilder asks for it): it goes too.
            Path(serial_log_path(vm["domain_name"])).unlink(missing_ok=True)
        self.store.delete(TABLE, vm_id)
        self.reconciler.forget(vm)
        return {"kept_disks": kept}

    # -- console and events -------------------------------------------------------------
    def console(self, vm_id: str, user: dict[str, Any], max_bytes: int = 65536) -> str:
        vm = self.require(vm_id, user)
        if not self.nodes.is_local(vm["node"]):
            raise Invalid("the serial console log can only be read on the local node",
                          code="not_supported")
        path = Path(serial_log_path(vm["domain_name"]))
        if not path.exists():
            return ""
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", "replace")

    def on_domain_event(self, node_id: str, dom_uuid: str, state: str | None,
                        event: int, detail: int) -> None:
        self.reconciler.on_domain_event(node_id, dom_uuid, state, event, detail)
