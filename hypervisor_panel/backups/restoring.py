"""Restoring backups (admins only): a VM in place, a VM as a new one, or the panel.

Every archive of the chain is checked (every hash) while its disks are written into NEW
volumes, and only when all matched are they swapped in (in place: the VM is stopped,
pointed at the new volumes, its old volumes deleted) or adopted by a new VM made through
the VM service. A failure at any step deletes what the restore made and leaves the old
disks as they were. A panel backup is downloaded and verified next to the data directory
and applied at the next start (see ``panel_pending``), or restored offline with
``python app.py restore-panel ARCHIVE``.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import Conflict, Invalid, NotFound
from ..tasks import TaskContext
from ..vms.records import backup_lock, refuse_with_snapshots
from .backup_job import forget_checkpoints
from .service import BackupService
from .taking import SYSTEM, Meter
from .vm_restore import DiskPlacement, read_metadata, restore_chain

RESTORE_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "mode": {"enum": ["replace", "new"],
                 "description": "replace: into the same VM (stopped first); new: a new VM"},
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                 "description": "mode new: the new VM's name"},
        "node": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
        "storage": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
        "vm_template": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
        "network": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
        "start": {"type": "boolean", "description": "start the VM after the restore"},
        "passphrase": {"type": "string", "maxLength": 1024, "writeOnly": True},
    },
    "allOf": [{"if": {"properties": {"mode": {"const": "new"}}, "required": ["mode"]},
               "then": {"required": ["name"]}}],
}


class BackupRestorer:
    """Starts restore tasks for the backup service."""

    def __init__(self, backups: BackupService) -> None:
        self.backups = backups
        self.tasks = backups.tasks

    def restore(self, backup_id: str, body: dict[str, Any], user: dict[str, Any]
                ) -> dict[str, Any]:
        backup = self.backups.require(backup_id)
        chain = self.backups.chain(backup) if backup["kind"] == "vm" else [backup]
        if backup["kind"] == "panel":
            return self.tasks.submit(
                "backup.restore_panel", lambda ctx: self._panel_body(ctx, backup, body),
                title=f"Restore the panel from {backup['name']}", owner=user["id"],
                lock_key="panel-backup", subject=backup_id)
        if body.get("mode", "replace") == "new":
            return self.tasks.submit(
                "backup.restore", lambda ctx: self._new_vm_body(ctx, chain, body, user),
                title=f"Restore {backup['name']} as VM {body['name']}", owner=user["id"],
                subject=backup_id)
        vm = self.backups.vms.require(backup["vm"], SYSTEM) if self._vm_exists(backup) else None
        if vm is None:
            raise Conflict(f"VM {backup['vm_name']!r} no longer exists: restore this backup as "
                           "a new VM (mode: new)", code="vm_not_found")
        if self.tasks.busy(backup_lock(vm["id"])):
            raise Conflict(f"VM {vm['name']!r} is being backed up", code="vm_backup_running")
        refuse_with_snapshots(vm, "restore a backup over it")  # type: ignore[arg-type]
        return self.tasks.submit(
            "backup.restore", lambda ctx: self._replace_body(ctx, vm["id"], chain, body),
            title=f"Restore VM {vm['name']} from {backup['name']}", owner=user["id"],
            lock_key=f"vm:{vm['id']}", subject=vm["id"])

    # -- in place ----------------------------------------------------------------------
    def _replace_body(self, ctx: TaskContext, vm_id: str, chain: list[dict[str, Any]],
                      body: dict[str, Any]) -> dict[str, Any]:
        vms = self.backups.vms
        vm = vms.require(vm_id, SYSTEM)
        was_running = vms.state_of(vm)[0] == "running"
        conn = self.backups.nodes.connection(vm["node"]).get()
        token = time.strftime("%Y%m%d%H%M%S")
        placements = {}
        for disk in vm.get("disks", []):
            if disk.get("device", "disk") != "disk":
                continue
            backend = self.backups.storages.backend(self.backups.storages.require(disk["storage"]))
            stem = disk["volume"].rsplit(".", 1)[0]
            suffix = disk["volume"][len(stem):]
            placements[disk["target"]] = DiskPlacement(backend, f"{stem}-r{token}{suffix}")
        ctx.log(f"verifying {len(chain)} archive(s), then writing {len(placements)} new "
                "volume(s); the VM's disks are untouched until then")
        # Checked while written (one read of the archives): the new volumes are swapped in
        # only after every hash matched, and deleted when one does not.
        meter = Meter(ctx)
        result = restore_chain(conn, self.backups.refs(chain), placements, verify_first=False,
                               progress=meter, cancelled=lambda: ctx.cancelled,
                               local=self.backups.nodes.is_local(vm["node"]))
        meter.finish()
        ctx.log("archives verified and disks written; stopping the VM and swapping them in")
        after = vms.replace_disks(vm_id, {dev: vol.name for dev, vol in result.volumes.items()},
                                  ctx.log)
        try:  # the old disks' checkpoints mean nothing now: the next backup is a full one
            forget_checkpoints(conn.lookupByUUIDString(vm["uuid"]))
        except Exception as exc:  # noqa: BLE001 - the next backup falls back to full anyway
            ctx.log(f"could not drop the old checkpoints: {exc}")
        if body.get("start", was_running):
            vms.lifecycle.start(vms.require(vm_id, SYSTEM), ctx)
        return {"vm": vm_id, "volumes": {d: v.name for d, v in result.volumes.items()},
                "backup": chain[-1]["id"], "state": after.get("state")}

    # -- as a new VM -------------------------------------------------------------------
    def _new_vm_body(self, ctx: TaskContext, chain: list[dict[str, Any]], body: dict[str, Any],
                     user: dict[str, Any]) -> dict[str, Any]:
        refs = self.backups.refs(chain)
        _xml, record = read_metadata(refs[-1])
        template = body.get("vm_template") or record.get("vm_template")
        storage_id = body.get("storage") or record.get("storage")
        if not template or not storage_id:
            raise Invalid("say which vm_template and storage the new VM gets",
                          code="restore_needs_choice")
        node_id = body.get("node") or self.backups.vms.place(
            record.get("memory_mib", 512), storage_id)
        backend = self.backups.storages.backend(self.backups.storages.require(storage_id))
        volume = backend.volume_name({"domain_name": body["name"]})
        main = next((d["target"] for d in record.get("disks", [])
                     if d.get("device", "disk") == "disk"), "vda")
        conn = self.backups.nodes.connection(node_id).get()
        ctx.log(f"verifying {len(chain)} archive(s), then writing {volume} on the new node")
        meter = Meter(ctx)
        result = restore_chain(conn, refs, {main: DiskPlacement(backend, volume)},
                               verify_first=False, progress=meter,
                               cancelled=lambda: ctx.cancelled,
                               local=self.backups.nodes.is_local(node_id))
        meter.finish()
        request: dict[str, Any] = {"name": body["name"], "vm_template": template,
                                   "storage": storage_id, "node": node_id,
                                   "adopt_volume": result.volumes[main].name,
                                   "start": body.get("start", False)}
        if body.get("network"):
            request["network"] = body["network"]
        try:
            task = self.backups.vms.create(request, user)
        except BaseException:
            backend.delete_volume(conn, result.volumes[main].name)
            raise
        ctx.log(f"creating VM {body['name']} from the restored disk (task {task['id']})")
        final = self.tasks.wait(task["id"], timeout=3600)
        if final["state"] != "succeeded":
            error = (final.get("error") or {}).get("message")
            raise Conflict(f"the new VM could not be made: {error}", code="restore_failed")
        return {"vm": final["result"]["vm"], "volumes": {main: result.volumes[main].name},
                "backup": chain[-1]["id"]}

    # -- the panel ---------------------------------------------------------------------
    def restore_panel(self, target_id: str, archive: str, passphrase: str | None,
                      user: dict[str, Any]) -> dict[str, Any]:
        """Restore the panel from an archive on a target (also one this panel never saw:
        a fresh install brought back from its old backups)."""
        self.backups.targets.require(target_id)
        backup = {"id": None, "name": archive, "target": target_id, "archive": archive}
        return self.tasks.submit(
            "backup.restore_panel",
            lambda ctx: self._panel_body(ctx, backup, {"passphrase": passphrase}),
            title=f"Restore the panel from {archive}", owner=user["id"],
            lock_key="panel-backup")

    def _panel_body(self, ctx: TaskContext, backup: dict[str, Any], body: dict[str, Any]
                    ) -> dict[str, Any]:
        from .panel_pending import stage

        target = self.backups.targets.open(backup["target"])
        ctx.log(f"downloading and verifying {backup['archive']}")
        manifest = stage(self.backups.data_dir, target.open_read(backup["archive"]),
                         body.get("passphrase"))
        files = len(manifest.get("files", []))
        ctx.log(f"verified: {files} files from panel {manifest.get('panel_version')}; "
                "restart the panel to switch to it (the current data is kept aside)")
        return {"backup": backup["id"], "archive": backup["archive"], "verified": True,
                "files": files, "restart_required": True}

    def _vm_exists(self, backup: dict[str, Any]) -> bool:
        try:
            self.backups.vms.require(backup["vm"], SYSTEM)
            return True
        except NotFound:  # the VM was deleted
            return False
