"""libvirt side of a VM backup: the pull job, checkpoints, and the paused helper domain."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable, Iterator

import libvirt

from ..virt.errors import libvirt_message
from .archive import BackupError
from .vm_disks import CHECKPOINT_PREFIX, DomainDisk, checkpoint_disks, compat_of, helper_xml

V2_BITMAP_ERROR = "Cannot store dirty bitmaps in qcow2 v2"
JOB_END_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on this machine right now (for a local NBD server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def backup_job_running(dom: libvirt.virDomain) -> bool:
    """Whether the domain runs a backup job (ours, or one left by a killed panel)."""
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError:
        return False
    return stats.get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE and \
        stats.get("operation") == libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP


def end_backup_job(dom: libvirt.virDomain) -> bool:
    """End a running backup job (a pull job only ends this way); whether one ran."""
    if not dom.isActive() or not backup_job_running(dom):
        return False
    try:
        dom.abortJob()
    except libvirt.libvirtError as exc:
        if backup_job_running(dom):
            raise BackupError(f"cannot end the backup job of {dom.name()}: "
                              f"{libvirt_message(exc)}") from exc
    deadline = time.monotonic() + JOB_END_TIMEOUT
    while backup_job_running(dom):  # abortJob returns before QEMU has torn the job down
        if time.monotonic() > deadline:
            raise BackupError(f"the backup job of {dom.name()} did not end within "
                              f"{JOB_END_TIMEOUT:.0f} s")
        time.sleep(0.05)
    return True


def find_checkpoint(dom: libvirt.virDomain, name: str) -> libvirt.virDomainCheckpoint | None:
    """The checkpoint ``name`` of the domain, or None."""
    try:
        return dom.checkpointLookupByName(name, 0)
    except libvirt.libvirtError:
        return None


def tracked_disks(checkpoint: libvirt.virDomainCheckpoint) -> set[str]:
    """The disks a checkpoint tracks with a bitmap."""
    return checkpoint_disks(checkpoint.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN))


def delete_checkpoint(dom: libvirt.virDomain, name: str, metadata_only: bool = False) -> None:
    """Delete one checkpoint: its bitmaps too (the domain must be running), or with
    ``metadata_only`` only libvirt's record of it (its disks were replaced, say)."""
    checkpoint = find_checkpoint(dom, name)
    if checkpoint is None:
        return
    flags = libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY if metadata_only else 0
    try:
        checkpoint.delete(flags)
    except libvirt.libvirtError as exc:
        raise BackupError(f"cannot delete checkpoint {name} of {dom.name()}: "
                          f"{libvirt_message(exc)}") from exc


def forget_checkpoints(dom: libvirt.virDomain) -> list[str]:
    """Drop libvirt's record of every panel checkpoint (after the disks were swapped for
    restored ones, whose images hold no bitmaps); the next backup is a full one."""
    names = panel_checkpoints(dom)
    for name in reversed(names):
        delete_checkpoint(dom, name, metadata_only=True)
    return names


def panel_checkpoints(dom: libvirt.virDomain) -> list[str]:
    """Names of the checkpoints the panel made on the domain, oldest first."""
    try:
        found = dom.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)
    except libvirt.libvirtError:
        return []
    return [c.getName() for c in found if c.getName().startswith(CHECKPOINT_PREFIX)]


def prune_checkpoints(dom: libvirt.virDomain, keep: Iterable[str]) -> tuple[list[str], list[str]]:
    """Delete the panel's checkpoints not in ``keep`` (newest first); (deleted, problems)."""
    wanted, deleted, problems = set(keep), [], []
    for name in reversed(panel_checkpoints(dom)):
        if name in wanted:
            continue
        try:
            delete_checkpoint(dom, name)
        except BackupError as exc:  # a bitmap gone with a replaced disk, say
            try:
                delete_checkpoint(dom, name, metadata_only=True)
            except BackupError:
                problems.append(exc.message)
                continue
            problems.append(f"{exc.message}; removed only libvirt's record of it")
        deleted.append(name)
    return deleted, problems


def qcow2_compat(conn: libvirt.virConnect, disk: DomainDisk) -> str | None:
    """The compat level of a file disk's qcow2 image when a storage pool knows it."""
    if disk.driver_type != "qcow2" or disk.source_type != "file":
        return None
    try:
        return compat_of(conn.storageVolLookupByPath(disk.source).XMLDesc(0))
    except libvirt.libvirtError:
        return None


def begin(dom: libvirt.virDomain, backup: str, checkpoint: str | None) -> None:
    """``backupBegin``; BackupError with the cause (and the fix for qcow2 v2 images)."""
    try:
        dom.backupBegin(backup, checkpoint, 0)
    except libvirt.libvirtError as exc:
        message = libvirt_message(exc)
        if V2_BITMAP_ERROR in message:
            raise BackupError(
                f"cannot back up {dom.name()}: a qcow2 disk is compat 0.10 (v2), which cannot "
                f"hold dirty bitmaps ({message}); stop the VM and run qemu-img amend -o "
                "compat=1.1 on it", code="qcow2_v2") from exc
        raise BackupError(f"cannot start the backup of {dom.name()}: {message}",
                          code=_code_of(exc)) from exc


def _code_of(exc: libvirt.libvirtError) -> str:
    if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT,
                                libvirt.VIR_ERR_CHECKPOINT_INCONSISTENT):
        return "checkpoint_unusable"
    if "bitmap" in (exc.get_error_message() or "").lower():
        return "checkpoint_unusable"
    return "vm_backup_error"


@contextlib.contextmanager
def running(dom: libvirt.virDomain) -> Iterator[bool]:
    """Make sure the domain has a QEMU process; yields whether a helper was started.

    A stopped domain gets a paused, transient copy of itself that exposes only its disks
    (:func:`helper_xml`), started with AUTODESTROY so that it dies with this connection
    even when the panel is killed; it is destroyed on leaving the block.
    """
    if dom.isActive():
        yield False
        return
    conn = dom.connect()
    xml = helper_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    flags = libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_AUTODESTROY
    try:
        conn.createXML(xml, flags)
    except libvirt.libvirtError as exc:
        if not dom.isActive():  # not a start that raced ours
            raise BackupError(f"cannot start {dom.name()} paused to back up its disks: "
                              f"{libvirt_message(exc)}") from exc
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
