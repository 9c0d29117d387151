"""Provisioning a VM: its disk in a storage, its domain definition, then (maybe) a start.

The create task checks for cancellation between steps; a failed or cancelled create
removes everything it made (domain, volume, record).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import libvirt

from ..errors import PanelError
from ..storage import GIB, StorageBackend
from ..store import Store
from ..tasks import TaskContext
from ..virt.domain_xml import DomainBuilder
from ..virt.errors import libvirt_message
from .install import Installer, InstallRequest
from .lifecycle import Lifecycle
from .nics import VMNetworking
from .reconcile import Reconciler
from .records import TABLE, DiskRecord, VMRecord

if TYPE_CHECKING:
    from ..nodes import NodeManager
    from ..storages import StorageService

PrepareDomain = Callable[[VMRecord, DomainBuilder], None]


class Provisioner:
    def __init__(self, store: Store, nodes: NodeManager, storages: StorageService,
                 reconciler: Reconciler, lifecycle: Lifecycle, networking: VMNetworking,
                 installer: Installer, prepare_domain: PrepareDomain) -> None:
        self.store = store
        self.nodes = nodes
        self.storages = storages
        self.reconciler = reconciler
        self.lifecycle = lifecycle
        self.networking = networking
        self.installer = installer
        self.prepare_domain = prepare_domain

    def builder(self, vm: VMRecord) -> DomainBuilder:
        """The domain a VM record describes (disks are added by the caller)."""
        boot = vm.get("boot") or {}
        node_conn = self.nodes.connection(vm["node"])
        return DomainBuilder(
            name=vm["domain_name"], uuid=vm["uuid"], vm_id=vm["id"], title=vm["name"],
            domain_type=self.nodes.domain_type(vm["node"]),
            arch=self.nodes.info(vm["node"]).get("arch", "x86_64"),
            memory_mib=vm["memory_mib"], vcpus=vm["vcpus"], cpu_shares=vm.get("cpu_shares"),
            kernel=boot.get("kernel"), initrd=boot.get("initrd"), cmdline=boot.get("cmdline"),
            vnc=vm.get("vnc", False), serial_log=node_conn.serial_logs,
            boot_order=list(vm.get("boot_order") or ["hd"]),
        )

    def _make_disk(self, ctx: TaskContext, backend: StorageBackend,
                   conn: libvirt.virConnect, vm: VMRecord, volume_name: str
                   ) -> libvirt.virStorageVol:
        storage_name = backend.storage["name"]
        backend.ensure_pool(conn)
        if vm.get("adopt_volume"):  # a restored backup: the disk exists already
            ctx.progress(10, f"using the restored volume {volume_name} in {storage_name}")
            return backend.lookup_volume(conn, volume_name)
        if vm.get("image"):
            how = "linked clone" if backend.copy_on_write else "full copy"
            ctx.progress(10, f"cloning image {vm['image']} ({how}) in {storage_name}")
            return backend.clone_volume(conn, vm["image"], volume_name, vm["disk_gib"] * GIB)
        ctx.progress(10, f"creating a {vm['disk_gib']} GiB disk in {storage_name}")
        return backend.create_volume(conn, volume_name, vm["disk_gib"] * GIB)

    def _define(self, conn: libvirt.virConnect, vm: VMRecord, builder: DomainBuilder) -> None:
        self.networking.apply(vm, builder)
        self.prepare_domain(vm, builder)
        with self.reconciler.expect(vm["uuid"]):
            try:
                conn.defineXML(builder.to_xml())
            except libvirt.libvirtError as exc:
                raise PanelError(f"libvirt refused the domain: {libvirt_message(exc)}",
                                 code="define_failed") from exc
        self.nodes.connection(vm["node"]).set_state(vm["uuid"], vm["domain_name"], "stopped")

    def create_body(self, ctx: TaskContext, vm_id: str, start: bool,
                    install: InstallRequest | None = None,
                    then: Callable[[VMRecord], dict[str, Any]] | None = None
                    ) -> dict[str, Any]:
        """The ``vm.create`` task: disk, definition, optional start; undone on failure."""
        vm: VMRecord = self.store.require(TABLE, vm_id, "VM")  # type: ignore[assignment]
        conn = self.nodes.connection(vm["node"]).get()
        backend = self.storages.backend(self.storages.require(vm["storage"]))
        volume_name = vm.get("adopt_volume") or backend.volume_name(vm)
        made: list[str] = []  # volumes this create made (removed if it fails)
        defined = False
        try:
            ctx.check_cancelled()
            volume = self._make_disk(ctx, backend, conn, vm, volume_name)
            made.append(volume_name)
            disks: list[DiskRecord] = [{"storage": vm["storage"], "volume": volume_name,
                                        "target": "vda", "size_gib": vm["disk_gib"],
                                        "image": vm.get("image")}]
            builder = self.builder(vm)
            builder.disks.append(backend.disk(volume, target="vda"))
            for disk, record in self.installer.cdroms(ctx, backend, conn, vm,
                                                      install or InstallRequest()):
                if not record.get("shared"):
                    made.append(record["volume"])
                builder.disks.append(disk)
                disks.append(record)
            ctx.check_cancelled()
            ctx.progress(50, "defining the domain")
            self._define(conn, vm, builder)
            defined = True
            self.networking.attach(vm, vm["node"])
            ctx.check_cancelled()
            vm = self.store.update(TABLE, vm_id, {  # type: ignore[assignment]
                "status": "ok", "disks": disks, "domain_type": builder.domain_type})
            if start:
                ctx.progress(90, "starting")
                self.lifecycle.start(vm, ctx)
            ctx.log(f"VM {vm['name']} created on node {self.nodes.require(vm['node'])['name']}")
        except BaseException:
            ctx.log("creation failed or was cancelled; removing what it made")
            self._roll_back(ctx, conn, vm, backend, made, defined)
            raise
        result: dict[str, Any] = {"vm": vm_id}
        if then is not None:  # the VM stays even when this follow-up cannot start
            result.update(then(vm))
        return result

    def _roll_back(self, ctx: TaskContext, conn: libvirt.virConnect, vm: VMRecord,
                   backend: StorageBackend, made: list[str], defined: bool) -> None:
        if defined:
            self.lifecycle.undefine(conn, vm)
            try:
                self.networking.detach(vm, vm["node"])
            except PanelError as exc:
                ctx.log(f"could not undo the network setup: {exc.message}")
        self.networking.release(vm.get("interfaces", []))
        for name in made:
            try:
                backend.delete_volume(conn, name)
            except PanelError as exc:
                ctx.log(f"could not delete the new volume {name}: {exc.message}")
        self.store.delete(TABLE, vm["id"])
        self.reconciler.forget(vm)

    def redefine(self, vm: VMRecord) -> None:
        """Define a stopped VM's domain anew from its record (disks, NICs, hooks)."""
        conn = self.nodes.connection(vm["node"]).get()
        builder = self.builder(vm)
        for disk in vm.get("disks", []):
            backend = self.storages.backend(self.storages.require(disk["storage"]))
            device = backend.disk(backend.lookup_volume(conn, disk["volume"]),
                                  target=disk["target"])
            if disk.get("device") == "cdrom":
                device.as_cdrom(disk["target"])
            builder.disks.append(device)
        self.networking.apply(vm, builder)
        self.prepare_domain(vm, builder)
        self.reconciler.expect_redefine(vm["uuid"])
        try:
            conn.defineXML(builder.to_xml())
        except libvirt.libvirtError as exc:
            raise PanelError(f"libvirt refused the domain: {libvirt_message(exc)}",
                             code="define_failed") from exc
