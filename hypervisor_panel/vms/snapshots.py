"""VM snapshots: libvirt internal snapshots, kept inside the VM's qcow2 disks.

A snapshot of a running VM holds its memory too (reverting resumes it where it was); one of
a stopped VM holds the disks only. Every disk must be a qcow2 file (raw, LVM and RBD disks
cannot hold internal snapshots: refused with a clear error). The VM record lists its
snapshots; a new one is entered there under the store lock together with the owner's
``snapshots`` quota check, so two concurrent requests cannot both take the last unit.

QEMU cannot load a snapshot into disks that carry dirty bitmaps, so a revert first deletes
the backups' checkpoints: the VM's next backup is a full one, and says why. Snapshots do not
travel with a migration (libvirt keeps their metadata on the node): a VM with snapshots is
not migrated until they are deleted.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import libvirt

from .. import limits
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..store import Store
from ..tasks import TaskContext, TaskManager
from ..virt.errors import libvirt_message
from .lifecycle import Lifecycle
from .reconcile import Reconciler
from .records import TABLE, VMRecord, refuse_during_backup

MAX_PER_VM = 32


def _element(name: str, description: str) -> str:
    """The ``<domainsnapshot>`` XML (built with an XML library from validated values)."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    return ET.tostring(root, encoding="unicode")


def unsupported_disks(xml: str) -> list[str]:
    """The disks of a domain XML that cannot hold an internal snapshot."""
    bad = []
    for disk in ET.fromstring(xml).iter("disk"):  # noqa: S314 - libvirt's own XML
        if disk.get("device", "disk") != "disk":
            continue
        driver = disk.find("driver")
        target = disk.find("target")
        dev = target.get("dev", "?") if target is not None else "?"
        if disk.get("type") != "file" or driver is None or driver.get("type") != "qcow2":
            bad.append(dev)
    return bad


class SnapshotActions:
    """List, take, revert and delete a VM's snapshots (tasks under the VM's lock)."""

    def __init__(self, store: Store, tasks: TaskManager, lifecycle: Lifecycle,
                 reconciler: Reconciler, users: Callable[[str], dict[str, Any] | None]) -> None:
        self.store, self.tasks, self.lifecycle = store, tasks, lifecycle
        self.reconciler, self.users = reconciler, users

    @staticmethod
    def listing(vm: VMRecord) -> list[dict[str, Any]]:
        return sorted(vm.get("snapshots", []), key=lambda s: s["created"])  # type: ignore

    @staticmethod
    def find(vm: VMRecord, name: str) -> dict[str, Any]:
        for snap in vm.get("snapshots", []):  # type: ignore[attr-defined]
            if snap["name"] == name:
                return snap
        raise NotFound(f"VM {vm['name']!r} has no snapshot {name!r}", code="snapshot_not_found")

    def _reserve(self, vm: VMRecord, body: dict[str, Any]) -> dict[str, Any]:
        """Enter the snapshot in the record, within the owner's quota (under the lock)."""
        with self.store.locked():
            fresh: VMRecord = self.store.require(TABLE, vm["id"], "VM")  # type: ignore
            snaps = list(fresh.get("snapshots", []))  # type: ignore[attr-defined]
            if any(s["name"] == body["name"] for s in snaps):
                raise Conflict(f"VM {vm['name']!r} already has a snapshot {body['name']!r}",
                               code="already_exists")
            if len(snaps) >= MAX_PER_VM:
                raise Conflict(f"VM {vm['name']!r} has {MAX_PER_VM} snapshots, the most a VM "
                               "may have: delete some first", code="too_many_snapshots")
            owner = fresh.get("owner")
            maximum = limits.limit(self.users(owner), "snapshots") if owner else None
            if maximum is not None:
                held = sum(len(v.get("snapshots", [])) for v in self.store.raw_values(TABLE)
                           if v.get("owner") == owner)
                if held + 1 > maximum:
                    raise Forbidden(limits.exceeded("snapshots", maximum),
                                    code="quota_exceeded")
            snap = {"name": body["name"], "description": body.get("description", ""),
                    "created": time.time(), "state": "creating", "memory": None}
            self.store.update(TABLE, vm["id"], {"snapshots": [*snaps, snap]})
            return snap

    def _set(self, vm_id: str, name: str, fields: dict[str, Any] | None) -> None:
        """Change (or, with None, drop) one snapshot entry of the record."""
        with self.store.locked():
            fresh = self.store.get(TABLE, vm_id)
            if fresh is None:
                return
            snaps = [({**s, **fields} if fields is not None else None)
                     if s["name"] == name else s for s in fresh.get("snapshots", [])]
            self.store.update(TABLE, vm_id, {"snapshots": [s for s in snaps if s]})

    def take(self, vm: VMRecord, body: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        """A task taking a snapshot (with the memory when the VM runs)."""
        refuse_during_backup(self.tasks, vm)
        dom = self.lifecycle.domain(vm)
        bad = unsupported_disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        if bad:
            raise Invalid(f"VM {vm['name']!r} has disks that cannot hold snapshots "
                          f"({', '.join(bad)}: only qcow2 files can)", code="snapshots_unsupported")
        snap = self._reserve(vm, body)

        def run(ctx: TaskContext) -> dict[str, Any]:
            try:
                domain = self.lifecycle.domain(vm)
                memory = domain.isActive() == 1
                what = "disks and memory" if memory else "disks"
                ctx.log(f"taking snapshot {snap['name']} ({what})")
                domain.snapshotCreateXML(_element(snap["name"], snap["description"]), 0)
            except BaseException as exc:
                self._set(vm["id"], snap["name"], None)
                if isinstance(exc, libvirt.libvirtError):
                    raise Conflict(f"libvirt refused the snapshot: {libvirt_message(exc)}",
                                   code="snapshot_failed") from exc
                raise
            self._set(vm["id"], snap["name"], {"state": "ready", "memory": memory})
            return {"snapshot": snap["name"], "memory": memory}

        try:
            return self.tasks.submit("vm.snapshot", run, title=f"Snapshot VM {vm['name']}",
                                     owner=user["id"], lock_key=f"vm:{vm['id']}",
                                     subject=vm["id"])
        except BaseException:  # the VM is busy: the entry goes again
            self._set(vm["id"], snap["name"], None)
            raise

    def revert(self, vm: VMRecord, name: str, user: dict[str, Any]) -> dict[str, Any]:
        """A task bringing the VM back to a snapshot (the backups' checkpoints go first)."""
        snap = self.find(vm, name)
        if snap.get("state") != "ready":
            raise Conflict(f"snapshot {name!r} is not ready", code="snapshot_busy")
        refuse_during_backup(self.tasks, vm)

        def run(ctx: TaskContext) -> dict[str, Any]:
            dom = self.lifecycle.domain(vm)
            dropped = 0
            for checkpoint in dom.listAllCheckpoints(0):
                checkpoint.delete(0)
                dropped += 1
            if dropped:
                ctx.log(f"deleted {dropped} backup checkpoint(s): QEMU cannot revert disks "
                        "with dirty bitmaps; the next backup is a full one")
            try:
                dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), 0)
            except libvirt.libvirtError as exc:
                raise Conflict(f"libvirt could not revert to {name}: {libvirt_message(exc)}",
                               code="revert_failed") from exc
            self.reconciler.known(vm)
            ctx.log(f"VM {vm['name']} is back at snapshot {name}")
            return {"snapshot": name, "checkpoints_deleted": dropped}

        return self.tasks.submit("vm.snapshot_revert", run, owner=user["id"],
                                 title=f"Revert VM {vm['name']} to {name}",
                                 lock_key=f"vm:{vm['id']}", subject=vm["id"])

    def delete(self, vm: VMRecord, name: str, user: dict[str, Any]) -> dict[str, Any]:
        """A task deleting one snapshot (its data inside the disks too)."""
        self.find(vm, name)

        def run(ctx: TaskContext) -> dict[str, Any]:
            dom = self.lifecycle.domain(vm)
            try:
                dom.snapshotLookupByName(name, 0).delete(0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise Conflict(f"libvirt could not delete snapshot {name}: "
                                   f"{libvirt_message(exc)}", code="snapshot_failed") from exc
                ctx.log(f"snapshot {name} was already gone from the node")
            self._set(vm["id"], name, None)
            return {"deleted": name}

        return self.tasks.submit("vm.snapshot_delete", run, owner=user["id"],
                                 title=f"Delete snapshot {name} of VM {vm['name']}",
                                 lock_key=f"vm:{vm['id']}", subject=vm["id"])
