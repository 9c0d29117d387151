"""Backups (owner of the ``backups`` table): take, list, verify, restore and delete.

A record describes one published archive on a target: ``kind`` (vm | panel), ``type``
(full | incremental, with ``parent``: the backup it builds on), the VM it is of, the
checkpoint the next incremental starts from, sizes and the archive name. Records are
written only after the target published the archive, so a listed backup is always whole.
Taking backups is in :mod:`.taking`; restoring in :mod:`.restoring`. Only admins take,
restore, verify or delete (the routes say so); users list the backups of their own VMs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import limits
from ..errors import Conflict, Forbidden, NotFound
from ..events import EventLog
from ..references import References
from ..store import Store
from ..tasks import TaskContext, TaskManager
from .archive import verify_archive
from .chain import ArchiveRef
from .targets import BackupTargetService

if TYPE_CHECKING:
    from ..nodes import NodeManager
    from ..storages import StorageService
    from ..vms import VMService

TABLE = "backups"


class BackupService:
    """The backups' records plus the tasks that verify, restore and delete them."""

    def __init__(self, store: Store, tasks: TaskManager, events: EventLog,
                 references: References, targets: BackupTargetService, vms: VMService,
                 nodes: NodeManager, storages: StorageService, data_dir: Path) -> None:
        self.store, self.tasks, self.events = store, tasks, events
        self.targets, self.vms, self.nodes, self.storages = targets, vms, nodes, storages
        self.data_dir = Path(data_dir)
        references.register("backup_target", self._on_target, "backup")

    # -- records -----------------------------------------------------------------------
    def require(self, backup_id: str, user: dict[str, Any] | None = None) -> dict[str, Any]:
        backup = self.store.get(TABLE, backup_id)
        if backup is None or (user is not None and not self._may_see(backup, user)):
            raise NotFound(f"backup {backup_id!r} not found", code="backup_not_found")
        return backup

    def listing(self, user: dict[str, Any], vm: str | None = None, target: str | None = None,
                kind: str | None = None) -> list[dict[str, Any]]:
        """Backups newest first, filtered; users see only their own VMs' backups."""
        found = [b for b in self.store.all(TABLE)
                 if (vm is None or b.get("vm") == vm) and (target is None or b["target"] == target)
                 and (kind is None or b["kind"] == kind) and self._may_see(b, user)]
        return sorted(found, key=lambda b: b["created"], reverse=True)

    def count_of(self, owner_id: str) -> int:
        """How many backups of a user's VMs there are (their ``backups`` quota's unit)."""
        return len(self.store.find(TABLE, owner=owner_id))

    def check_quota(self, owner_id: str | None, adding: int = 1) -> None:
        """Refuse a backup that would take the VM owner's backups beyond their quota."""
        maximum = limits.limit(self.vms.user(owner_id), "backups") if owner_id else None
        if maximum is None:
            return
        held = len(self.store.find(TABLE, owner=owner_id))
        if held + adding > maximum:
            raise Forbidden(f"{limits.exceeded('backups', maximum)} (the VM's owner has "
                            f"{held}; delete some first)", code="quota_exceeded")

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        """Record a published backup; checked against the owner's quota under the store
        lock, so two backups running at once cannot both take the last unit."""
        with self.store.locked():
            self.check_quota(record.get("owner"))
            stored = self.store.insert(TABLE, record)
        self.events.emit("backup.create", stored["id"], of=stored["kind"], vm=stored.get("vm"),
                         type=stored.get("type"), target=stored["target"])
        return stored

    def of_vm(self, vm_id: str, target_id: str | None = None) -> list[dict[str, Any]]:
        """A VM's backups, oldest first (on one target, when given)."""
        found = [b for b in self.store.find(TABLE, vm=vm_id)
                 if target_id is None or b["target"] == target_id]
        return sorted(found, key=lambda b: b["created"])

    def of_schedule(self, schedule_id: str) -> list[dict[str, Any]]:
        """The backups a schedule made (its retention applies to these only)."""
        return self.store.find(TABLE, schedule=schedule_id)

    def chain(self, backup: dict[str, Any]) -> list[dict[str, Any]]:
        """The backups a restore of ``backup`` reads: its full ancestor first, itself last."""
        out = [backup]
        while out[0].get("parent"):
            parent = self.store.get(TABLE, out[0]["parent"])
            if parent is None:
                raise Conflict(f"backup {backup['id']} needs backup {out[0]['parent']}, which "
                               "was deleted", code="broken_chain")
            out.insert(0, parent)
        return out

    def children(self, backup_id: str) -> list[dict[str, Any]]:
        return self.store.find(TABLE, parent=backup_id)

    def refs(self, chain: list[dict[str, Any]]) -> list[ArchiveRef]:
        return [ArchiveRef(self.targets.open(b["target"]), b["archive"]) for b in chain]

    def browse(self, target_id: str) -> list[dict[str, Any]]:
        """What a target holds, with the record of each archive this panel knows."""
        known = {b["archive"]: b["id"] for b in self.store.find(TABLE, target=target_id)}
        entries = self.targets.open(target_id).list()
        return [{"name": e.name, "size": e.size, "mtime": e.mtime,
                 "kind": "panel" if e.name.startswith("panel/") else "vm",
                 "backup": known.get(e.name)} for e in sorted(entries, key=lambda e: e.name)]

    # -- delete ------------------------------------------------------------------------
    def delete(self, backup_id: str, actor: str | None = None) -> None:
        """Remove the archive from its target and the record; refused while an incremental
        backup builds on it (delete those first)."""
        backup = self.require(backup_id)
        kids = self.children(backup_id)
        if kids:
            raise Conflict(f"backup {backup_id} is the base of {len(kids)} incremental "
                           "backup(s); delete them first", code="backup_in_use",
                           details=[k["id"] for k in kids])
        self.targets.open(backup["target"]).delete(backup["archive"])
        self.store.delete(TABLE, backup_id)
        self.events.emit("backup.delete", backup_id, actor=actor, vm=backup.get("vm"))

    # -- verify ------------------------------------------------------------------------
    def verify(self, backup_id: str, user: dict[str, Any],
               passphrase: str | None = None) -> dict[str, Any]:
        """A task that re-reads the archive (the whole chain) and checks every hash."""
        backup = self.require(backup_id)
        return self.tasks.submit(
            "backup.verify", lambda ctx: self._verify_body(ctx, backup, passphrase),
            title=f"Verify backup {backup['name']}", owner=user["id"], subject=backup_id)

    def _verify_body(self, ctx: TaskContext, backup: dict[str, Any],
                     passphrase: str | None) -> dict[str, Any]:
        chain = [backup] if backup["kind"] == "panel" else self.chain(backup)
        total = sum(b["size"] for b in chain) or 1
        done = 0
        for item in chain:
            target = self.targets.open(item["target"])
            ctx.log(f"checking {item['archive']} ({item['size']} bytes) on {item['target_name']}")
            if item["kind"] == "panel":
                from .panel_archive import read_panel_manifest

                read_panel_manifest(target.open_read(item["archive"]), passphrase)
            else:
                base = done
                verify_archive(target, item["archive"], progress=lambda d, _t, b=base:
                               ctx.detail(100 * (b + d) // total, bytes_done=b + d,
                                          bytes_total=total),
                               cancelled=lambda: ctx.cancelled)
            done += item["size"]
        ctx.detail(100, bytes_done=total, bytes_total=total)
        self.store.update(TABLE, backup["id"], {"verified": True})
        ctx.log("every hash matches")
        return {"backup": backup["id"], "archives": len(chain), "ok": True}

    # -- helpers -----------------------------------------------------------------------
    def _may_see(self, backup: dict[str, Any], user: dict[str, Any]) -> bool:
        if user["role"] == "admin":
            return True
        return backup["kind"] == "vm" and backup.get("owner") == user["id"]

    def _on_target(self, target_id: str) -> list[str]:
        return [b["name"] for b in self.store.find(TABLE, target=target_id)]

    def public(self, backup: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        out = dict(backup)
        if user["role"] != "admin":
            out.pop("checkpoint", None)
            out.pop("archive", None)
        return out
