"""The VM service: the one entry point for VMs (owner of the ``vms`` table).

A thin facade over placement (pure), provisioning, lifecycle, reconciliation and migration.
Request bodies are validated by the router against the schemas in ``api/vms.py``; this
layer checks what a schema cannot (existence, permissions, capacity, state).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..auth import Auth
from ..errors import Conflict, Forbidden, Invalid, NotFound, PanelError, Unavailable
from ..events import EventLog
from ..ip_pools import IPPoolService
from ..networks import NetworkService
from ..references import References
from ..settings import SettingsService
from ..store import Store
from ..tasks import TaskManager
from ..virt.domain_xml import serial_log_path
from ..vm_templates import VMTemplateService
from ..volumes import volume_ref
from . import placement
from .create import Creator
from .disk_swap import replace_disks
from .guest_keys import GuestKeyStore
from .guest_os import GuestOS
from .install import Installer
from .interfaces import InterfaceActions
from .lifecycle import Lifecycle
from .migration import Migrator
from .nics import VMNetworking
from .provision import PrepareDomain, Provisioner
from .reconcile import Reconciler
from .records import TABLE, VMRecord, refuse_during_backup
from .snapshots import SnapshotActions

if TYPE_CHECKING:
    from ..nodes import NodeManager
    from ..storages import StorageService

log = logging.getLogger(__name__)

# action -> the states it may start from
ACTIONS = {
    "start": ("stopped", "crashed", "paused"),
    "stop": ("running", "paused", "stopping"),
    "reboot": ("running",),
    "destroy": ("running", "paused", "stopping", "crashed"),
}


class VMService:
    def __init__(self, store: Store, tasks: TaskManager, events: EventLog,
                 settings: SettingsService, nodes: NodeManager, storages: StorageService,
                 templates: VMTemplateService, users: Auth, references: References,
                 networks: NetworkService, pools: IPPoolService, data_dir: Path,
                 prepare_domain: PrepareDomain) -> None:
        self.store, self.tasks, self.events = store, tasks, events
        self.nodes, self.storages = nodes, storages
        self.reconciler = Reconciler(store, nodes, events)
        self.lifecycle = Lifecycle(store, nodes, self.reconciler)
        self.networking = VMNetworking(store, nodes, networks, pools, references,
                                       users.get_user)  # type: ignore[arg-type]
        self.keys = GuestKeyStore(data_dir)
        self.installer = Installer(self.keys, self.networking)
        self.provisioner = Provisioner(store, nodes, storages, self.reconciler,
                                       self.lifecycle, self.networking, self.installer,
                                       prepare_domain)
        self.creator = Creator(store, tasks, events, settings, nodes, storages, templates,
                               users, self.reconciler, self.provisioner, self.networking)
        self.migrator = Migrator(store, nodes, storages, tasks, self.reconciler,
                                 self.lifecycle, self.networking, self.place)
        self.interfaces = InterfaceActions(store, tasks, self.reconciler, self.lifecycle,
                                           self.provisioner, self.networking)
        self.guest = GuestOS(store, tasks, nodes, storages, self.networking, self.keys,
                             self.lifecycle, self.provisioner)
        self.creator.guest = self.guest
        self.snapshots = SnapshotActions(store, tasks, self.lifecycle, self.reconciler,
                                         users.get_user)  # type: ignore[arg-type]
        self.recipes: Any = None
        for kind, finder in (("storage", self._using_storage), ("vm_template",
                             self._using_template), ("node", self._on_node),
                             ("user", self._owned_by), ("volume", self._using_volume),
                             ("os_template", self._using_os_template)):
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

    def _using_os_template(self, template_id: str) -> list[str]:
        return self._names(lambda v: v.get("os_template") == template_id)

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

    def network_config(self, vm_id: str, user: dict[str, Any]) -> dict[str, Any]:
        """The guest's network configuration (cloud-init network-config v2)."""
        return self.networking.network_config(self.require(vm_id, user))

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

    def usage(self, owner_id: str) -> dict[str, int]:
        """What a user's VMs take, in the units of their quota (``backups`` aside)."""
        with self.store.locked():
            mine = [v for v in self.store.raw_values(TABLE) if v.get("owner") == owner_id]
            used = placement.usage_of(mine)
            ips = self.networking.pools.held_by({v["id"] for v in mine})
        return {"vms": used.vms, "vcpus": used.vcpus, "memory_mib": used.memory_mib,
                "disk_gib": used.disk_gib, "ips": ips,
                "snapshots": sum(len(v.get("snapshots", [])) for v in mine)}

    def user(self, user_id: str) -> dict[str, Any] | None:
        """A VM owner's user record (their quotas), through the users' service."""
        return self.creator.users.get_user(user_id)  # type: ignore[return-value]

    def view(self, vm_id: str, user: dict[str, Any]) -> dict[str, Any]:
        return self.public(self.require(vm_id, user))

    def records(self) -> list[VMRecord]:
        """Every VM record (for the backup schedules' selections)."""
        return self.store.all(TABLE)  # type: ignore[return-value]

    def on_node(self, node_id: str) -> list[VMRecord]:
        return self.store.find(TABLE, node=node_id)  # type: ignore[return-value]

    # -- placement and create (vms/create.py) --------------------------------------------
    def place(self, memory_mib: int, storage_id: str | None,
              exclude: set[str] | frozenset[str] = frozenset()) -> str:
        return self.creator.place(memory_mib, storage_id, exclude)

    def create(self, data: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        return self.creator.create(data, user)

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

    # -- the guest OS (vms/guest_os.py) ------------------------------------------------------
    def attach_services(self, os_templates: Any, recipes: Any) -> None:
        """The OS-template and recipe services (built after this one by the panel)."""
        self.creator.os_templates = self.guest.os_templates = os_templates
        self.guest.recipes = self.recipes = recipes

    def run_recipe(self, vm_id: str, body: dict[str, Any], user: dict[str, Any]
                   ) -> dict[str, Any]:
        vm = self.require(vm_id, user)
        task = self.guest.run_recipe(vm, body["recipe"], body.get("params", {}), user)
        self.events.emit("vm.run_recipe", vm_id, actor=user["id"], recipe=body["recipe"])
        return task

    def reinstall(self, vm_id: str, body: dict[str, Any], user: dict[str, Any]
                  ) -> dict[str, Any]:
        vm = self.require(vm_id, user)
        if vm.get("status") != "ok":
            raise Conflict(f"VM {vm['name']!r} is {vm.get('status')}", code="vm_busy")
        task = self.guest.reinstall(vm, body, user)
        self.events.emit("vm.reinstall", vm_id, actor=user["id"],
                         os_template=body["os_template"])
        return task

    def replace_disks(self, vm_id: str, volumes: dict[str, str],
                      log: Callable[[str], None]) -> dict[str, Any]:
        """A restore in place: swap new volumes in (see vms/disk_swap.py)."""
        vm = replace_disks(self.store, self.nodes, self.storages, self.lifecycle,
                           self.provisioner, vm_id, volumes, log)
        self.events.emit("vm.restore", vm_id, disks=sorted(volumes))
        return self.public(vm)

    # -- interfaces (vms/interfaces.py) ----------------------------------------------------
    def add_interface(self, vm_id: str, body: dict[str, Any], user: dict[str, Any]
                      ) -> dict[str, Any]:
        vm = self.require(vm_id, user)
        _admin_for_addresses(body, user)
        nic = self.interfaces.add(vm, body)
        self.events.emit("vm.interface_add", vm_id, actor=user["id"], nic=nic["id"])
        return nic

    def remove_interface(self, vm_id: str, nic_id: str, user: dict[str, Any]) -> None:
        self.interfaces.remove(self.require(vm_id, user), nic_id)
        self.events.emit("vm.interface_remove", vm_id, actor=user["id"], nic=nic_id)

    def add_address(self, vm_id: str, nic_id: str, body: dict[str, Any],
                    user: dict[str, Any]) -> dict[str, Any]:
        nic = self.interfaces.add_address(self.require(vm_id, user), nic_id, body)
        self.events.emit("vm.address_add", vm_id, actor=user["id"], nic=nic_id)
        return nic

    def remove_address(self, vm_id: str, nic_id: str, address: str,
                       user: dict[str, Any]) -> None:
        self.interfaces.remove_address(self.require(vm_id, user), nic_id, address)
        self.events.emit("vm.address_remove", vm_id, actor=user["id"], nic=nic_id,
                         address=address)

    # -- snapshots (vms/snapshots.py) ----------------------------------------------------
    def snapshot_list(self, vm_id: str, user: dict[str, Any]) -> list[dict[str, Any]]:
        return self.snapshots.listing(self.require(vm_id, user))

    def snapshot(self, vm_id: str, action: str, user: dict[str, Any],
                 name: str | None = None, body: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
        """Start a snapshot task: ``take`` (``body``), ``revert`` or ``delete`` (``name``)."""
        vm = self.require(vm_id, user)
        if action == "take":
            task = self.snapshots.take(vm, body or {}, user)
            name = (body or {}).get("name")
        elif action == "revert":
            task = self.snapshots.revert(vm, name or "", user)
        else:
            task = self.snapshots.delete(vm, name or "", user)
        self.events.emit(f"vm.snapshot_{action}", vm_id, actor=user["id"], snapshot=name)
        return task

    # -- update / delete ----------------------------------------------------------------
    def update(self, vm_id: str, data: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        self.require(vm_id, user)
        return self.public(self.store.update(TABLE, vm_id, data))  # type: ignore[arg-type]

    def delete(self, vm_id: str, user: dict[str, Any], keep_disks: bool = False
               ) -> dict[str, Any]:
        vm = self.require(vm_id, user)
        if vm.get("status") == "creating":
            raise Conflict(f"VM {vm['name']!r} is still being created", code="vm_busy")
        refuse_during_backup(self.tasks, vm)
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
        try:
            self.networking.detach(vm, vm["node"])
        except PanelError as exc:  # the VM goes anyway; say what may be left on the node
            log.warning("VM %s: could not undo its network setup: %s", vm["name"], exc)
        self.networking.release(vm.get("interfaces", []))
        kept = []
        for disk in vm.get("disks", []):
            storage = self.storages.get(disk["storage"])
            if disk.get("shared"):
                continue  # an installer ISO is not the VM's to delete
            if keep_disks:
                kept.append(disk)
            elif storage is not None:
                self.storages.backend(storage).delete_volume(conn, disk["volume"])
        self.keys.remove(vm_id)
        if self.recipes is not None:
            self.recipes.forget_vm(vm_id)
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


def _admin_for_addresses(request: dict[str, Any], user: dict[str, Any]) -> None:
    """Only admins choose addresses; users get the next free one."""
    if ("ip" in request or "ips" in request) and user["role"] != "admin":
        raise Forbidden("only an admin may choose an interface's address", code="admin_only")
