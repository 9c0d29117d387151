"""Moving VMs between nodes with libvirt's migration.

Running VMs migrate live (memory only on shared storage; with their disks copied on local
storage); stopped VMs move offline (disks streamed for local storage). A pre-flight check
says why a migration would fail before anything is tried; on failure the VM stays on its
source node, running, and what was made on the target is removed.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import libvirt

from ..errors import Conflict, Invalid, PanelError
from ..storage import volume_format_of
from ..tasks import TaskContext
from ..validation import ID, validate
from . import checks

if TYPE_CHECKING:
    from ..panel import Panel

MIGRATE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["node"],
    "properties": {"node": ID, "max_downtime_ms": {"type": "integer", "minimum": 10,
                                                   "maximum": 60000}},
}
LIVE_FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
              | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)


def _msg(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()


class Migrator:
    def __init__(self, panel: Panel) -> None:
        self.panel = panel

    # -- pre-flight -------------------------------------------------------------------
    def problems(self, vm: dict[str, Any], target_id: str) -> list[str]:
        """Every reason the migration of ``vm`` to ``target_id`` would fail (empty: go)."""
        nodes = self.panel.nodes
        if target_id == vm["node"]:
            return [f"VM {vm['name']!r} is already on that node"]
        target = self.panel.store.get("nodes", target_id)
        if target is None:
            return [f"node {target_id!r} not found"]
        out = []
        if nodes.status(target_id) != "online":
            out.append(f"node {target['name']!r} is offline")
        if target.get("maintenance"):
            out.append(f"node {target['name']!r} is in maintenance")
        if nodes.status(vm["node"]) != "online":
            out.append("the VM's own node is offline")
        if out:
            return out
        state, _ = self.panel.vms.state_of(vm)
        if state not in ("running", "stopped", "paused"):
            out.append(f"the VM is {state}")
        source_facts = {**(self.panel.store.get("nodes", vm["node"]) or {}).get("facts", {}),
                        **nodes.info(vm["node"])}
        target_facts = {**target.get("facts", {}), **nodes.info(target_id)}
        out += checks.compatibility_problems(target_facts, [("source", source_facts)])
        if state == "running":
            free = nodes.info(target_id).get("free_memory_mib")
            if free is not None and free and free < vm["memory_mib"]:
                out.append(f"node {target['name']!r} has {free} MiB free, the VM needs "
                           f"{vm['memory_mib']} MiB")
        for disk in vm.get("disks", []):
            storage = self.panel.store.get("storages", disk["storage"])
            if storage is None:
                out.append(f"storage {disk['storage']!r} of disk {disk['target']} is gone")
            elif storage.get("nodes", {}).get(target_id, {}).get("state") != "active":
                out.append(f"storage {storage['name']!r} is not active on node "
                           f"{target['name']!r}")
        for key in ("kernel", "initrd"):
            path = (vm.get("boot") or {}).get(key)
            if not path:
                continue
            try:
                present = nodes.file_readable(target_id, path)
            except PanelError as exc:
                out.append(f"cannot check the boot files on {target['name']!r}: {exc.message}")
                break
            if not present:
                out.append(f"boot {key} {path} is not on node {target['name']!r}")
        try:
            nodes.connection(target_id).get().lookupByName(vm["domain_name"])
            out.append(f"node {target['name']!r} already has a domain named "
                       f"{vm['domain_name']!r}")
        except libvirt.libvirtError:
            pass
        return out

    # -- the task ---------------------------------------------------------------------
    def submit(self, vm_id: str, body: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        vm = self.panel.vms.require(vm_id, user)
        validate(body, MIGRATE_SCHEMA, "migrate request")
        problems = self.problems(vm, body["node"])
        if problems:
            raise Conflict("cannot migrate: " + "; ".join(problems), code="migration_refused",
                           details=problems)
        return self.panel.tasks.submit(
            "vm.migrate", lambda ctx: self.migrate(ctx, vm_id, body["node"],
                                                   body.get("max_downtime_ms")),
            title=f"Migrate VM {vm['name']}", owner=user["id"], lock_key=f"vm:{vm_id}",
            subject=vm_id)

    def migrate(self, ctx: TaskContext, vm_id: str, target_id: str,
                max_downtime_ms: int | None = None) -> dict[str, Any]:
        vms = self.panel.vms
        vm = self.panel.store.require("vms", vm_id, "VM")
        problems = self.problems(vm, target_id)
        if problems:
            raise Conflict("cannot migrate: " + "; ".join(problems), code="migration_refused")
        source_id = vm["node"]
        sconn = self.panel.nodes.connection(source_id).get()
        dconn = self.panel.nodes.connection(target_id).get()
        dom = sconn.lookupByUUIDString(vm["uuid"])
        live = bool(dom.isActive())
        copy_disks = [d for d in vm.get("disks", [])
                      if not self.panel.storages.backend(
                          self.panel.store.require("storages", d["storage"])).shared]
        created: list[tuple[Any, str]] = []
        vms.expect_move(vm["uuid"])
        try:
            for disk in copy_disks:
                backend = self.panel.storages.backend(
                    self.panel.store.require("storages", disk["storage"]))
                source_vol = backend.lookup_volume(sconn, disk["volume"])
                fmt = checks_format(source_vol)
                ctx.log(f"creating {disk['volume']} on the target node")
                backend.create_volume(dconn, disk["volume"], source_vol.info()[1], fmt)
                created.append((backend, disk["volume"]))
                if not live:
                    ctx.log(f"copying {disk['volume']} to the target node")
                    self._copy_volume(backend, sconn, dconn, disk["volume"])
            if live:
                self._live(ctx, vm, dom, dconn, bool(copy_disks), max_downtime_ms)
            else:
                ctx.progress(80, "moving the definition")
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE
                                  | libvirt.VIR_DOMAIN_XML_INACTIVE)
                dconn.defineXML(xml)
                vms.undefine_for_move(sconn, vm)
        except Exception:
            for backend, volume in created:
                try:
                    backend.delete_volume(dconn, volume)
                except PanelError as exc:
                    ctx.log(f"could not remove {volume} from the target: {exc.message}")
            raise
        finally:
            vms.expect_move(vm["uuid"], done=True)
        for disk in copy_disks:  # the disks now live on the target
            backend = self.panel.storages.backend(
                self.panel.store.require("storages", disk["storage"]))
            try:
                backend.delete_volume(sconn, disk["volume"])
            except PanelError as exc:
                ctx.log(f"the old disk {disk['volume']} stays on the source: {exc.message}")
        self.panel.store.update("vms", vm_id, {"node": target_id})
        state = "running" if live else "stopped"
        self.panel.nodes.connection(source_id).set_state(vm["uuid"], vm["domain_name"], None)
        self.panel.nodes.connection(target_id).set_state(vm["uuid"], vm["domain_name"], state)
        ctx.log(f"{'live' if live else 'offline'} migration done")
        return {"vm": vm_id, "from": source_id, "to": target_id, "live": live,
                "copied_disks": [d["volume"] for d in copy_disks]}

    def _live(self, ctx: TaskContext, vm: dict[str, Any], dom: libvirt.virDomain,
              dconn: libvirt.virConnect, copy_storage: bool,
              max_downtime_ms: int | None) -> None:
        target = self.panel.store.require("nodes", self._target_id(dconn))
        address = target.get("migration_host") or target.get("host") or "127.0.0.1"
        if address == "localhost":
            address = "127.0.0.1"
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{address}"}
        flags = LIVE_FLAGS
        if copy_storage:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        if max_downtime_ms:
            dom.migrateSetMaxDowntime(max_downtime_ms, 0)
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.5):
                try:
                    stats = dom.jobStats()
                except libvirt.libvirtError:
                    continue
                total = stats.get("data_total") or stats.get("memory_total") or 0
                processed = stats.get("data_processed") or stats.get("memory_processed") or 0
                if total:
                    ctx.progress(min(95, int(95 * processed / total)))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        ctx.log(f"live migration to {target['name']} ({'with' if copy_storage else 'without'}"
                " copying disks)")
        started = time.monotonic()
        try:
            dom.migrate3(dconn, params, flags)
        except libvirt.libvirtError as exc:
            raise PanelError(f"live migration failed, the VM stays on its node: {_msg(exc)}",
                             code="migration_failed") from exc
        finally:
            done.set()
            watcher.join(2)
        ctx.log(f"migrated in {time.monotonic() - started:.1f} s")

    # -- maintenance ------------------------------------------------------------------
    def evacuate(self, node_id: str, user: dict[str, Any]) -> dict[str, Any]:
        """Migrate every VM off ``node_id`` (the node is already marked in maintenance)."""

        def body(ctx: TaskContext) -> dict[str, Any]:
            moved, failed = [], []
            vms = self.panel.store.find("vms", node=node_id)
            for index, vm in enumerate(vms):
                template = {"memory_mib": vm["memory_mib"]}
                try:
                    target = self.panel.vms.place(template, vm["storage"], exclude={node_id})
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

        return self.panel.tasks.submit("node.evacuate", body, title="Evacuate node",
                                       owner=user["id"], lock_key=f"node:{node_id}",
                                       subject=node_id)

    def _target_id(self, dconn: libvirt.virConnect) -> str:
        for node_id in self.panel.nodes.online_ids():
            if self.panel.nodes.connection(node_id).get() is dconn:
                return node_id
        raise Invalid("the target node went away", code="node_offline")

    @staticmethod
    def _copy_volume(backend: Any, sconn: libvirt.virConnect, dconn: libvirt.virConnect,
                     name: str) -> None:
        """Stream a stopped VM's disk from one node to the other through libvirt."""
        vol = backend.lookup_volume(dconn, name)
        stream = dconn.newStream(0)
        vol.upload(stream, 0, 0, 0)
        try:
            for chunk in backend.download(sconn, name):
                stream.send(chunk)
            stream.finish()
        except BaseException:
            stream.abort()
            raise


def checks_format(vol: libvirt.virStorageVol) -> str | None:
    """The format to give the target's copy of ``vol`` (None: the back end's default)."""
    fmt = volume_format_of(vol)
    return fmt if fmt in ("qcow2", "raw") else None
