"""Taking backups: one VM, the panel itself, or a schedule's run (then its retention).

A VM backup task holds the VM's backup lock (``vm-backup:<id>``): migrate and delete are
refused while it runs, start and stop are not. It is incremental when asked (or when the
schedule's ``full_every`` allows) and the VM's last backup on that target left a
checkpoint; the engine falls back to a full backup, and says why, when that checkpoint is
gone (lost, or the VM moved to another node). The archive is written under a temporary
name and published by the target only when complete; the record is added after that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import libvirt

from ..errors import Conflict, Forbidden, PanelError
from ..store import new_id
from ..tasks import TaskContext
from ..vms.records import backup_lock
from . import retention
from .service import BackupService
from .vm_backup import LOCAL_SOCKET_DIR, NbdServer, ParentBackup, backup_domain

MIB = 1024 * 1024
SYSTEM = {"id": None, "role": "admin", "name": "scheduler"}
CONFLICTING = ("vm.migrate", "vm.delete", "vm.create", "vm.reinstall", "backup.restore")


class Meter:
    """A progress callback that reports bytes, percent and throughput to a task (a log line
    per 10%); :meth:`finish` records the end (the engine throttles its last calls away)."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx, self.began, self.decile, self.total = ctx, time.monotonic(), -1, 0

    def __call__(self, done: int, total: int) -> None:
        if total <= 0:
            return
        self.total = total
        rate = done / max(time.monotonic() - self.began, 1e-3)
        percent = min(100 * done // total, 100)
        self.ctx.detail(min(percent, 99), bytes_done=done, bytes_total=total,
                        rate_bytes_per_s=int(rate))
        if percent // 10 != self.decile:
            self.decile = percent // 10
            self.ctx.log(f"{done / MIB:.1f} of {total / MIB:.1f} MiB ({percent}%, "
                         f"{rate / MIB:.1f} MiB/s)")

    def finish(self) -> None:
        total = self.total
        rate = total / max(time.monotonic() - self.began, 1e-3)
        self.ctx.detail(100, bytes_done=total, bytes_total=total, rate_bytes_per_s=int(rate))


class BackupTaker:
    """Starts backup tasks for the backup service."""

    def __init__(self, backups: BackupService) -> None:
        self.backups = backups
        self.tasks = backups.tasks

    # -- VMs ---------------------------------------------------------------------------
    def backup_vm(self, vm_id: str, body: dict[str, Any], user: dict[str, Any],
                  schedule: dict[str, Any] | None = None) -> dict[str, Any]:
        vm = self.backups.vms.require(vm_id, user)
        target = self.backups.targets.require(body["target"])
        self.backups.check_quota(vm.get("owner"))
        holder = self.tasks.busy(f"vm:{vm_id}")
        if holder and self.tasks.get(holder)["kind"] in CONFLICTING:
            raise Conflict(f"VM {vm['name']!r} is busy with task {holder}", code="vm_busy")
        return self.tasks.submit(
            "backup.vm", lambda ctx: self._vm_body(ctx, vm_id, target["id"], body, schedule),
            title=f"Back up VM {vm['name']} to {target['name']}", owner=user["id"],
            lock_key=backup_lock(vm_id), subject=vm_id)

    def _vm_body(self, ctx: TaskContext, vm_id: str, target_id: str, body: dict[str, Any],
                 schedule: dict[str, Any] | None) -> dict[str, Any]:
        vm = self.backups.vms.require(vm_id, SYSTEM)
        target_rec = self.backups.targets.require(target_id)
        self.backups.check_quota(vm.get("owner"))  # a scheduled run checks here
        parent = self._parent(vm_id, target_id, body, schedule)
        dom = self._domain(vm)
        backup_id = new_id()
        archive = f"vm-{vm_id}/{backup_id}.hvpbak"
        ctx.log(f"{'incremental on ' + parent['id'] if parent else 'full'} backup of "
                f"{vm['name']} to {target_rec['name']} as {archive}")
        keep = [b["checkpoint"] for b in self._latest_per_target(vm_id)
                if b["target"] != target_id and b.get("checkpoint")]
        target = self.backups.targets.open(target_id)
        self._drop_stale_partials(ctx, target, f"vm-{vm_id}/")
        writer = target.open_write(archive)
        meter = Meter(ctx)
        result = backup_domain(
            dom, writer, vm_record=dict(vm), keep_checkpoints=keep, progress=meter,
            parent=ParentBackup(parent["archive"], parent["checkpoint"]) if parent else None,
            cancelled=lambda: ctx.cancelled, nbd_server=self._nbd_server(ctx, vm["node"]),
            archive_name=archive)
        meter.finish()
        for warning in result.warnings:
            ctx.log(f"note: {warning}")
        if result.fallback_reason:
            ctx.log(f"full backup instead of an incremental one: {result.fallback_reason}")
        record = self._publish(target, archive, {
            "id": backup_id, "name": f"{vm['name']}-{time.strftime('%Y%m%d-%H%M%S')}",
            "kind": "vm", "vm": vm_id, "vm_name": vm["name"], "owner": vm.get("owner"),
            "node": vm["node"], "target": target_id, "target_name": target_rec["name"],
            "archive": archive, "size": result.size, "type": result.kind,
            "parent": parent["id"] if parent and result.kind == "incremental" else None,
            "checkpoint": result.checkpoint, "fallback_reason": result.fallback_reason,
            "data_bytes": result.data_bytes, "zero_bytes": result.zero_bytes,
            "disks": result.disks, "seconds": round(result.seconds, 3),
            "schedule": schedule["id"] if schedule else None, "created": time.time(),
            "verified": False})
        ctx.log(f"published {archive}: {result.size / MIB:.1f} MiB stored, "
                f"{result.data_bytes / MIB:.1f} MiB of data in {result.seconds:.1f} s")
        return {"backup": record["id"], "type": result.kind, "size": result.size,
                "data_bytes": result.data_bytes, "fallback_reason": result.fallback_reason}

    def _nbd_server(self, ctx: TaskContext, node_id: str) -> NbdServer:
        """QEMU's NBD export: a unix socket on this machine (TCP on the loopback when QEMU
        cannot make one), the node's loopback through an SSH tunnel (the node's pinned
        connection) on a remote node."""
        node = self.backups.nodes.require(node_id)
        if node.get("kind") != "ssh":
            return NbdServer(socket_dir=LOCAL_SOCKET_DIR)
        ctx.log(f"reading the disks through an SSH tunnel to node {node['name']}")
        return NbdServer(tunnel=lambda port: self.backups.nodes.forward(
            node_id, "127.0.0.1", port))

    def _publish(self, target: Any, archive: str, record: dict[str, Any]) -> dict[str, Any]:
        """Record the backup; over the owner's quota by now, the archive goes again."""
        try:
            return self.backups.add(record)
        except Forbidden:
            target.delete(archive)
            raise

    @staticmethod
    def _drop_stale_partials(ctx: TaskContext, target: Any, folder: str) -> None:
        """Remove what an interrupted backup of this VM left under a temporary name (a VM
        backup cannot resume it: the disks have changed since; the VM's lock is held)."""
        try:
            stale = [e.name for e in target.list_partial() if e.name.startswith(folder)]
            for name in stale:
                target.delete_partial(name)
                ctx.log(f"removed {name}, left unfinished by an interrupted backup")
        except PanelError as exc:
            ctx.log(f"could not look for unfinished archives: {exc.message}")

    def _domain(self, vm: dict[str, Any]) -> libvirt.virDomain:
        conn = self.backups.nodes.connection(vm["node"]).get()
        try:
            return conn.lookupByUUIDString(vm["uuid"])
        except libvirt.libvirtError as exc:
            raise PanelError(f"VM {vm['name']!r} has no domain on its node",
                             code="domain_missing") from exc

    def _latest_per_target(self, vm_id: str) -> list[dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for backup in self.backups.of_vm(vm_id):
            latest[backup["target"]] = backup
        return list(latest.values())

    def _parent(self, vm_id: str, target_id: str, body: dict[str, Any],
                schedule: dict[str, Any] | None) -> dict[str, Any] | None:
        """The backup an incremental one builds on, or None for a full backup."""
        mode = body.get("mode", "auto")
        if mode == "full":
            return None
        previous = self.backups.of_vm(vm_id, target_id)
        if not previous or not previous[-1].get("checkpoint"):
            return None
        last = previous[-1]
        if mode == "auto":
            full_every = (schedule or {}).get("full_every", body.get("full_every", 6))
            depth = len(self.backups.chain(last)) - 1
            if full_every == 0 or depth >= full_every:
                return None
        return last

    # -- the panel ---------------------------------------------------------------------
    def backup_panel(self, body: dict[str, Any], user: dict[str, Any],
                     schedule: dict[str, Any] | None = None) -> dict[str, Any]:
        target = self.backups.targets.require(body["target"])
        return self.tasks.submit(
            "backup.panel", lambda ctx: self._panel_body(ctx, target["id"],
                                                         body.get("passphrase"), schedule),
            title=f"Back up the panel to {target['name']}", owner=user["id"],
            lock_key="panel-backup")

    def _panel_body(self, ctx: TaskContext, target_id: str, passphrase: str | None,
                    schedule: dict[str, Any] | None) -> dict[str, Any]:
        from .panel_archive import write_panel_archive

        target_rec = self.backups.targets.require(target_id)
        backup_id = new_id()
        archive = f"panel/{backup_id}.hvppanel"
        ctx.log(f"panel backup to {target_rec['name']} as {archive}"
                f"{' (encrypted)' if passphrase else ''}")
        meter = Meter(ctx)
        with self.backups.targets.open(target_id).open_write(archive) as writer:
            manifest = write_panel_archive(self.backups.data_dir, self.backups.store, writer,
                                           passphrase, progress=meter)
        meter.finish()
        size = manifest.get("archive", {}).get("size", 0)
        record = self.backups.add({
            "id": backup_id, "name": f"panel-{time.strftime('%Y%m%d-%H%M%S')}",
            "kind": "panel", "vm": None, "target": target_id, "target_name": target_rec["name"],
            "archive": archive, "size": size, "type": "full", "parent": None,
            "encrypted": bool(passphrase), "files": len(manifest.get("files", [])),
            "schedule": schedule["id"] if schedule else None, "created": time.time(),
            "verified": False})
        return {"backup": record["id"], "size": size, "encrypted": bool(passphrase)}

    # -- schedules ---------------------------------------------------------------------
    def run_schedule(self, schedule: dict[str, Any], reason: str) -> dict[str, Any]:
        """One task that backs up the schedule's VMs and/or the panel, then prunes."""
        return self.tasks.submit(
            "backup.schedule", lambda ctx: self._schedule_body(ctx, schedule, reason),
            title=f"Backup schedule {schedule['name']} ({reason})", owner=None,
            subject=schedule["id"])

    def _schedule_body(self, ctx: TaskContext, schedule: dict[str, Any], reason: str
                       ) -> dict[str, Any]:
        vm_ids = self.select(schedule.get("vms", {"mode": "all"}))
        ctx.log(f"{len(vm_ids)} VM(s){' and the panel' if schedule.get('panel') else ''}")
        outcome: dict[str, Any] = {"backups": [], "failed": [], "pruned": []}
        for vm_id in vm_ids:
            ctx.check_cancelled()
            try:
                task = self.backup_vm(vm_id, {"target": schedule["target"], "mode": "auto"},
                                      SYSTEM, schedule)
            except PanelError as exc:
                outcome["failed"].append({"vm": vm_id, "error": exc.message})
                ctx.log(f"VM {vm_id}: not backed up: {exc.message}")
                continue
            self._collect(ctx, self.tasks.wait(task["id"], timeout=24 * 3600), vm_id, outcome)
        if schedule.get("panel"):
            task = self.backup_panel({"target": schedule["target"],
                                      "passphrase": schedule.get("passphrase")}, SYSTEM,
                                     schedule)
            self._collect(ctx, self.tasks.wait(task["id"], timeout=24 * 3600), "panel", outcome)
        outcome["pruned"] = self.prune(schedule, ctx.log)
        if outcome["failed"]:
            raise PanelError(f"{len(outcome['failed'])} backup(s) of this run failed: "
                             + "; ".join(f"{f['vm']}: {f['error']}" for f in outcome["failed"]),
                             code="backup_failed", details=outcome["failed"])
        return outcome

    @staticmethod
    def _collect(ctx: TaskContext, task: dict[str, Any], what: str,
                 outcome: dict[str, Any]) -> None:
        if task["state"] == "succeeded":
            outcome["backups"].append(task["result"]["backup"])
            ctx.log(f"{what}: backup {task['result']['backup']} done (task {task['id']})")
        else:
            message = (task.get("error") or {}).get("message", task["state"])
            outcome["failed"].append({"vm": what, "error": message})
            ctx.log(f"{what}: backup failed: {message} (task {task['id']})")

    def select(self, selection: dict[str, Any]) -> list[str]:
        """The ids of the VMs a schedule's selection names (existing ones only)."""
        vms = self.backups.vms.records()
        mode = selection.get("mode", "all")
        if mode == "none":
            return []
        if mode == "list":
            wanted = set(selection.get("ids", []))
            return [v["id"] for v in vms if v["id"] in wanted]
        if mode == "tags":
            tags = set(selection.get("tags", []))
            return [v["id"] for v in vms if tags & set(v.get("tags", []))]
        if mode == "nodes":
            nodes = set(selection.get("nodes", []))
            return [v["id"] for v in vms if v.get("node") in nodes]
        return [v["id"] for v in vms if v.get("status", "ok") == "ok"]

    def prune(self, schedule: dict[str, Any], log: Callable[[str], None]) -> list[str]:
        """Apply the schedule's retention to the backups it made (per VM, and the panel)."""
        rules = schedule.get("retention") or {}
        mine = self.backups.of_schedule(schedule["id"])
        groups: dict[str, list[dict[str, Any]]] = {}
        for backup in mine:
            groups.setdefault(backup.get("vm") or "panel", []).append(backup)
        removed = []
        for items in groups.values():
            for backup_id in retention.to_remove(items, rules):
                try:
                    self.backups.delete(backup_id)
                    removed.append(backup_id)
                    log(f"retention: removed backup {backup_id}")
                except PanelError as exc:
                    log(f"retention: could not remove backup {backup_id}: {exc.message}")
        return removed
