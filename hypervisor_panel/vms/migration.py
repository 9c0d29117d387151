"""Moving VMs between nodes with libvirt's migration.

Running VMs migrate live (memory only on shared storage; with their disks copied on local
storage); stopped VMs move offline (disks streamed for local storage). A pre-flight check
says why a migration would fail before anything is tried. On failure or cancel (a cancel
aborts libvirt's migration job) the VM stays on its source node, running, and what was
made on the target is removed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import libvirt

from ..cluster import checks
from ..errors import Conflict, PanelError
from ..storage import StorageBackend, volume_format_of
from ..store import Store
from ..tasks import TaskContext, TaskManager
from ..virt.errors import libvirt_message
from .lifecycle import Lifecycle
from .nics import VMNetworking
from .reconcile import Reconciler
from .records import TABLE, VMRecord, refuse_during_backup

if TYPE_CHECKING:
    from ..nodes import NodeManager
    from ..storages import StorageService

LIVE_FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
              | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
Placer = Callable[[int, str, set[str]], str]  # (memory MiB, storage id, exclude) -> node id


class Migrator:
    def __init__(self, store: Store, nodes: NodeManager, storages: StorageService,
                 tasks: TaskManager, reconciler: Reconciler, lifecycle: Lifecycle,
                 networking: VMNetworking, place: Placer) -> None:
        self.store, self.nodes, self.storages = store, nodes, storages
        self.tasks, self.reconciler, self.lifecycle = tasks, reconciler, lifecycle
        self.networking = networking
        self.place = place

    # -- pre-flight -------------------------------------------------------------------
    def problems(self, vm: VMRecord, target_id: str) -> list[str]:
        """Every reason the migration of ``vm`` to ``target_id`` would fail (empty: go)."""
        if target_id == vm["node"]:
            return [f"VM {vm['name']!r} is already on that node"]
        target = self.nodes.get(target_id)
        if target is None:
            return [f"node {target_id!r} not found"]
        out = []
        if self.nodes.status(target_id) != "online":
            out.append(f"node {target['name']!r} is offline")
        if target.get("maintenance"):
            out.append(f"node {target['name']!r} is in maintenance")
        if self.nodes.status(vm["node"]) != "online":
            out.append("the VM's own node is offline")
        if out:
            return out
        state, _ = self.reconciler.state_of(vm)
        if state not in ("running", "stopped", "paused"):
            out.append(f"the VM is {state}")
        if vm.get("snapshots"):
            out.append(f"the VM has {len(vm['snapshots'])} snapshot(s), which stay on its "
                       "node: delete them first")
        out += checks.compatibility_problems(self.nodes.facts(target_id),
                                             [("source", self.nodes.facts(vm["node"]))])
        free = self.nodes.info(target_id).get("free_memory_mib")
        if state == "running" and free and free < vm["memory_mib"]:
            out.append(f"node {target['name']!r} has {free} MiB free, the VM needs "
                       f"{vm['memory_mib']} MiB")
        out += self._storage_problems(vm, target_id, target["name"])
        for network, _nic in self.networking.nics(vm):
            if not self.networking.networks.active_on(network["id"], target_id):
                out.append(f"network {network['name']!r} is not active on node "
                           f"{target['name']!r}")
        out += self._boot_problems(vm, target_id, target["name"])
        try:
            self.nodes.connection(target_id).get().lookupByName(vm["domain_name"])
            out.append(f"node {target['name']!r} already has a domain named "
                       f"{vm['domain_name']!r}")
        except libvirt.libvirtError:
            pass
        return out

    def _storage_problems(self, vm: VMRecord, target_id: str, target_name: str) -> list[str]:
        out = []
        for disk in vm.get("disks", []):
            storage = self.storages.get(disk["storage"])
            if storage is None:
                out.append(f"storage {disk['storage']!r} of disk {disk['target']} is gone")
            elif not self.storages.active_on(disk["storage"], target_id):
                out.append(f"storage {storage['name']!r} is not active on node "
                           f"{target_name!r}")
        return out

    def _boot_problems(self, vm: VMRecord, target_id: str, target_name: str) -> list[str]:
        for key in ("kernel", "initrd"):
            path = (vm.get("boot") or {}).get(key)
            if not path:
                continue
            try:
                if not self.nodes.file_readable(target_id, path):
                    return [f"boot {key} {path} is not on node {target_name!r}"]
            except PanelError as exc:
                return [f"cannot check the boot files on {target_name!r}: {exc.message}"]
        return []

    # -- the task ---------------------------------------------------------------------
    def submit(self, vm: VMRecord, body: dict[str, Any], user: dict[str, Any]
               ) -> dict[str, Any]:
        refuse_during_backup(self.tasks, vm)
        problems = self.problems(vm, body["node"])
        if problems:
            raise Conflict("cannot migrate: " + "; ".join(problems), code="migration_refused",
                           details=problems)
        return self.tasks.submit(
            "vm.migrate", lambda ctx: self.migrate(ctx, vm["id"], body["node"], body),
            title=f"Migrate VM {vm['name']}", owner=user["id"], lock_key=f"vm:{vm['id']}",
            subject=vm["id"])

    def _local_disks(self, vm: VMRecord) -> list[tuple[dict[str, Any], StorageBackend]]:
        """The disks on storage that is not shared: they travel with the VM."""
        out = []
        for disk in vm.get("disks", []):
            backend = self.storages.backend(self.storages.require(disk["storage"]))
            if not backend.shared:
                out.append((disk, backend))
        return out

    def migrate(self, ctx: TaskContext, vm_id: str, target_id: str,
                options: dict[str, Any] | None = None) -> dict[str, Any]:
        options = options or {}
        vm: VMRecord = self.store.require(TABLE, vm_id, "VM")  # type: ignore[assignment]
        problems = self.problems(vm, target_id)
        if problems:
            raise Conflict("cannot migrate: " + "; ".join(problems), code="migration_refused")
        source_id = vm["node"]
        sconn = self.nodes.connection(source_id).get()
        dconn = self.nodes.connection(target_id).get()
        dom = sconn.lookupByUUIDString(vm["uuid"])
        live = bool(dom.isActive())
        local = self._local_disks(vm)
        created: list[tuple[StorageBackend, str]] = []
        with self.reconciler.expect(vm["uuid"], define=True, undefine=True):
            try:
                self._prepare_target(ctx, sconn, dconn, local, created, copy=not live)
                ctx.check_cancelled()
                if live:
                    self._live(ctx, vm, dom, dconn, target_id, bool(local), options)
                else:
                    self._offline(ctx, vm, dom, sconn, dconn)
            except BaseException:
                for backend, volume in created:
                    try:
                        backend.delete_volume(dconn, volume)
                    except PanelError as exc:
                        ctx.log(f"could not remove {volume} from the target: {exc.message}")
                raise
        return self._finish(ctx, vm, source_id, target_id, sconn, live, local)

    def _prepare_target(self, ctx: TaskContext, sconn: libvirt.virConnect,
                        dconn: libvirt.virConnect,
                        local: list[tuple[dict[str, Any], StorageBackend]],
                        created: list[tuple[StorageBackend, str]], copy: bool) -> None:
        """Make the local disks' volumes on the target (and copy them when offline)."""
        for disk, backend in local:
            ctx.check_cancelled()
            source_vol = backend.lookup_volume(sconn, disk["volume"])
            fmt = volume_format_of(source_vol)
            ctx.log(f"creating {disk['volume']} on the target node")
            backend.create_volume(dconn, disk["volume"], source_vol.info()[1],
                                  fmt if fmt in ("qcow2", "raw") else None)
            created.append((backend, disk["volume"]))
            if copy:
                ctx.log(f"copying {disk['volume']} to the target node")
                self._copy_volume(ctx, backend, sconn, dconn, disk["volume"])

    def _offline(self, ctx: TaskContext, vm: VMRecord, dom: libvirt.virDomain,
                 sconn: libvirt.virConnect, dconn: libvirt.virConnect) -> None:
        ctx.progress(80, "moving the definition")
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_INACTIVE)
        dconn.defineXML(xml)
        self.lifecycle.undefine(sconn, vm)

    def _finish(self, ctx: TaskContext, vm: VMRecord, source_id: str, target_id: str,
                sconn: libvirt.virConnect, live: bool,
                local: list[tuple[dict[str, Any], StorageBackend]]) -> dict[str, Any]:
        for disk, backend in local:  # the disks now live on the target
            try:
                backend.delete_volume(sconn, disk["volume"])
            except PanelError as exc:
                ctx.log(f"the old disk {disk['volume']} stays on the source: {exc.message}")
        try:  # the VM's per-node network state (DHCP entries, port forwards) moves too
            self.networking.detach(vm, source_id)
            self.networking.attach({**vm, "node": target_id}, target_id)  # type: ignore
        except PanelError as exc:
            ctx.log(f"network setup on the target is incomplete: {exc.message}")
        self.store.update(TABLE, vm["id"], {"node": target_id})
        self.nodes.connection(source_id).set_state(vm["uuid"], vm["domain_name"], None)
        self.nodes.connection(target_id).set_state(vm["uuid"], vm["domain_name"],
                                                   "running" if live else "stopped")
        ctx.log(f"{'live' if live else 'offline'} migration done")
        return {"vm": vm["id"], "from": source_id, "to": target_id, "live": live,
                "copied_disks": [d["volume"] for d, _ in local]}

    def _live(self, ctx: TaskContext, vm: VMRecord, dom: libvirt.virDomain,
              dconn: libvirt.virConnect, target_id: str, copy_storage: bool,
              options: dict[str, Any]) -> None:
        target = self.nodes.require(target_id)
        address = target.get("migration_host") or target.get("host") or "127.0.0.1"
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI:
                                  f"tcp://{'127.0.0.1' if address == 'localhost' else address}"}
        if options.get("max_bandwidth_mib"):
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = options["max_bandwidth_mib"]
        flags = LIVE_FLAGS | (libvirt.VIR_MIGRATE_NON_SHARED_DISK if copy_storage else 0)
        if options.get("max_downtime_ms"):
            dom.migrateSetMaxDowntime(options["max_downtime_ms"], 0)
        done = threading.Event()
        watcher = threading.Thread(target=self._watch_job, args=(ctx, dom, done), daemon=True)
        watcher.start()
        forget = ctx.on_cancel(lambda: _abort(dom))
        ctx.log(f"live migration to {target['name']} ({'with' if copy_storage else 'without'}"
                " copying disks)")
        started = time.monotonic()
        try:
            dom.migrate3(dconn, params, flags)
        except libvirt.libvirtError as exc:
            ctx.check_cancelled()  # an aborted job reports as cancelled, not failed
            raise PanelError("live migration failed, the VM stays on its node: "
                             f"{libvirt_message(exc)}", code="migration_failed") from exc
        finally:
            forget()
            done.set()
            watcher.join(2)
        ctx.log(f"migrated in {time.monotonic() - started:.1f} s")

    @staticmethod
    def _watch_job(ctx: TaskContext, dom: libvirt.virDomain, done: threading.Event) -> None:
        while not done.wait(0.5):
            try:
                stats = dom.jobStats()
            except libvirt.libvirtError:
                continue
            total = stats.get("data_total") or stats.get("memory_total") or 0
            processed = stats.get("data_processed") or stats.get("memory_processed") or 0
            if total:
                ctx.progress(min(95, int(95 * processed / total)))

    # -- maintenance ------------------------------------------------------------------
    def evacuate(self, node_id: str, user: dict[str, Any]) -> dict[str, Any]:
        """Migrate every VM off ``node_id`` (the node is already marked in maintenance)."""

        def body(ctx: TaskContext) -> dict[str, Any]:
            moved, failed = [], []
            vms = self.store.find(TABLE, node=node_id)
            for index, vm in enumerate(vms):
                ctx.check_cancelled()
                try:
                    target = self.place(vm["memory_mib"], vm["storage"], {node_id})
                    self.migrate(ctx, vm["id"], target)
                    moved.append(vm["name"])
                except PanelError as exc:
                    failed.append({"vm": vm["name"], "error": exc.message})
                    ctx.log(f"{vm['name']} stays: {exc.message}")
                ctx.progress(int(100 * (index + 1) / max(1, len(vms))))
            if failed:
                raise PanelError(f"{len(failed)} VM(s) could not leave the node: "
                                 + "; ".join(f"{f['vm']}: {f['error']}" for f in failed),
                                 code="evacuation_incomplete", details=failed)
            return {"moved": moved}

        return self.tasks.submit("node.evacuate", body, title="Evacuate node",
                                 owner=user["id"], lock_key=f"node:{node_id}",
                                 subject=node_id)

    @staticmethod
    def _copy_volume(ctx: TaskContext, backend: StorageBackend, sconn: libvirt.virConnect,
                     dconn: libvirt.virConnect, name: str) -> None:
        """Stream a stopped VM's disk from one node to the other through libvirt."""
        vol = backend.lookup_volume(dconn, name)
        stream = dconn.newStream(0)
        vol.upload(stream, 0, 0, 0)
        try:
            for chunk in backend.download(sconn, name):
                ctx.check_cancelled()
                stream.send(chunk)
            stream.finish()
        except BaseException:
            stream.abort()
            raise


def _abort(dom: libvirt.virDomain) -> None:
    """Cancel callback: abort the running migration job (the VM stays where it is)."""
    with contextlib.suppress(libvirt.libvirtError):
        dom.abortJob()
