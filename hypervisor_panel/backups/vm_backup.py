"""Back up a VM: every disk through libvirt's backup API in pull mode, into one archive.

:func:`backup_domain` takes a point-in-time copy of a running, paused or stopped domain
(a stopped one is started paused, as a disks-only transient copy, for the job's length),
reads each disk over NBD with libnbd (holes, zero areas and all-zero chunks are never sent),
compresses it with zstd and streams it to an :class:`~hypervisor_panel.backup.ArchiveWriter`
together with the domain XML and the panel's VM record, then publishes the archive.

Each backup creates a checkpoint; with ``parent`` the backup is incremental (only the
blocks written since the parent's checkpoint), falling back to a full one, with the reason
in the result, when that checkpoint is gone or unusable. After a published backup only
the new checkpoint (plus ``keep_checkpoints``) stays. On any failure the job is ended, the
new checkpoint deleted and the writer aborted: the next backup starts clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

import libvirt

from ..backup import ArchiveWriter, TargetEntry
from .archive import ArchiveBuilder, BackupError, CancelCheck, Progress
from .backup_job import (
    begin,
    delete_checkpoint,
    end_backup_job,
    find_checkpoint,
    free_port,
    prune_checkpoints,
    qcow2_compat,
    running,
    tracked_disks,
)
from .nbd_reader import bitmap_context, connect, plan_disk, planned_bytes, stream_disk
from .vm_disks import (
    DomainDisk,
    backup_xml,
    check_name,
    checkpoint_xml,
    domain_disks,
    new_checkpoint_name,
    without_bitmaps,
)

#: Where scratch files of disks without a local path (RBD, ...) go on the node.
DEFAULT_SCRATCH_DIR = "/var/lib/libvirt/images"
PROGRESS_EVERY = 0.25  # seconds between progress callbacks
PORT_ATTEMPTS = 3
REMOTE_PORTS = (20000, 30000)  # where a remote node's NBD server may listen (its loopback)
#: QEMU's own state folder under the system libvirtd: the NBD export's unix socket goes
#: there on this machine (QEMU may create it; a TCP handshake costs ~90 ms of delayed ACKs).
LOCAL_SOCKET_DIR = "/var/lib/libvirt/qemu"


@dataclass(frozen=True)
class ParentBackup:
    """The backup an incremental one builds on: its archive name and its checkpoint."""

    archive: str
    checkpoint: str


@dataclass(frozen=True)
class NbdServer:
    """Where QEMU's NBD server listens on the node (``host``, ``port``: None picks a free
    port) and how this process reaches it: directly, at ``connect_host:connect_port``, or
    through ``tunnel(port)``, a context giving the local end of a tunnel to the node's
    ``host:port`` (a remote node: its port is then picked at random, retried when taken).
    """

    host: str = "127.0.0.1"
    port: int | None = None
    connect_host: str | None = None
    connect_port: int | None = None
    tunnel: Callable[[int], AbstractContextManager[tuple[str, int]]] | None = None
    socket_dir: str | None = None  # this machine: a unix socket there, TCP if QEMU can't

    def socket_path(self, token: str) -> str | None:
        """The unix socket for one backup, or None (TCP) when there is no usable folder."""
        if self.socket_dir is None or self.tunnel is not None or \
                not os.access(self.socket_dir, os.W_OK | os.X_OK):
            return None
        return os.path.join(self.socket_dir, f"hvp-nbd-{token}.sock")

    def pick_port(self) -> int:
        if self.port:
            return self.port
        if self.tunnel is None:
            return free_port(self.host)
        return secrets.randbelow(REMOTE_PORTS[1] - REMOTE_PORTS[0]) + REMOTE_PORTS[0]

    @contextlib.contextmanager
    def reach(self, port: int) -> Iterator[tuple[str, int]]:
        """Where to connect to the server listening on ``port``."""
        if self.tunnel is not None:
            with self.tunnel(port) as local_end:
                yield local_end
        else:
            yield self.connect_host or self.host, self.connect_port or port


@dataclass
class BackupResult:
    """What a backup did; ``manifest`` is the archive's manifest."""

    kind: str  # full | incremental
    checkpoint: str | None
    parent: dict[str, str] | None
    fallback_reason: str | None
    size: int
    data_bytes: int
    zero_bytes: int
    seconds: float
    disks: list[dict[str, Any]]
    entry: TargetEntry | None
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    deleted_checkpoints: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy (for a task result)."""
        out = asdict(self)
        out.pop("manifest")
        out["entry"] = asdict(self.entry) if self.entry else None
        return out


class _Progress:
    """Throttled ``progress(done, total)`` calls."""

    def __init__(self, callback: Progress | None) -> None:
        self.callback, self.done, self.total, self.last = callback, 0, 0, 0.0

    def advance(self, n: int) -> None:
        """Count ``n`` more bytes read."""
        self.done += n
        now = time.monotonic()
        if self.callback is not None and now - self.last >= PROGRESS_EVERY:
            self.last = now
            self.callback(self.done, self.total)

    def finish(self) -> None:
        """Report completion."""
        if self.callback is not None:
            self.callback(self.total, self.total)


@dataclass
class _Job:
    """One backup's state, shared by the steps below."""

    dom: libvirt.virDomain
    builder: ArchiveBuilder
    server: NbdServer
    scratch_dir: str
    cancelled: CancelCheck | None
    progress: _Progress
    checkpoint: str = field(default_factory=new_checkpoint_name)
    incremental: str | None = None
    port: int = 0
    socket: str | None = None  # the export's unix socket, else TCP on ``port``
    reason: str | None = None
    disks: list[DomainDisk] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def backup_domain(dom: libvirt.virDomain, writer: ArchiveWriter, *,
                  vm_record: dict[str, Any] | None = None,
                  parent: ParentBackup | None = None,
                  keep_checkpoints: Iterable[str] = (),
                  progress: Progress | None = None,
                  cancelled: CancelCheck | None = None,
                  nbd_server: NbdServer | None = None,
                  scratch_dir: str = DEFAULT_SCRATCH_DIR,
                  archive_name: str | None = None) -> BackupResult:
    """Back up ``dom`` into ``writer`` and publish it; BackupError (writer aborted) on failure.

    ``parent``: make an incremental backup on top of that one (full, with
    ``fallback_reason``, when its checkpoint is gone). ``keep_checkpoints``: other panel
    checkpoints to keep (another schedule's chain). ``progress(done, total)`` counts the
    bytes read from the disks; ``cancelled()`` is polled between chunks.
    """
    began, published = time.monotonic(), False
    try:
        job = _Job(dom, ArchiveBuilder(writer), nbd_server or NbdServer(), scratch_dir,
                   cancelled, _Progress(progress))
        with running(dom) as helper:
            if helper:
                job.warnings.append("the VM was stopped: it ran paused (disks only) for the "
                                    "backup")
            if end_backup_job(dom):
                job.warnings.append("ended a backup job left behind by an interrupted backup")
            job.disks = _disks(dom, job.warnings)
            job.incremental, job.reason = _choose_parent(dom, job.disks, parent)
            manifest, entry = _take(job, writer, vm_record, parent, archive_name)
            published = True
            deleted, problems = prune_checkpoints(dom, {job.checkpoint, *keep_checkpoints})
            job.warnings.extend(problems)
    except BaseException:
        if not published:
            with contextlib.suppress(Exception):
                writer.abort()
        raise
    job.progress.finish()
    return _result(job, manifest, entry, time.monotonic() - began, deleted)


def _take(job: _Job, writer: ArchiveWriter, vm_record: dict[str, Any] | None,
          parent: ParentBackup | None, archive_name: str | None
          ) -> tuple[dict[str, Any], TargetEntry]:
    """Write the metadata parts and the disks, finish the archive and publish it."""
    dom = job.dom
    job.builder.add_blob("domain-xml", "domain.xml",
                         dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    job.builder.add_blob("vm-record", "vm.json",
                         json.dumps(vm_record or {}, sort_keys=True, default=str).encode())
    made_checkpoint = False
    try:
        if job.disks:
            made_checkpoint = _begin_with_fallback(job)
            _stream_disks(job)
        manifest = _manifest(job, parent, archive_name, made_checkpoint)
        size = job.builder.finish(manifest)
        end_backup_job(dom)
        entry = writer.publish(size)
    except BaseException:
        job.builder.close()
        _undo(dom, job.checkpoint if made_checkpoint else None)
        raise
    return {**manifest, "parts": job.builder.parts}, entry


def _undo(dom: libvirt.virDomain, checkpoint: str | None) -> None:
    """End the job and delete the new checkpoint (errors here must not hide the cause)."""
    with contextlib.suppress(Exception):
        end_backup_job(dom)
    if checkpoint:
        with contextlib.suppress(Exception):
            delete_checkpoint(dom, checkpoint)


def _disks(dom: libvirt.virDomain, warnings: list[str]) -> list[DomainDisk]:
    """The domain's disks; qcow2 v2 (compat 0.10) images are marked full-only."""
    out = []
    conn = dom.connect()
    for disk in domain_disks(dom.XMLDesc(0)):
        if disk.bitmaps and qcow2_compat(conn, disk) == "0.10":
            disk = without_bitmaps(disk, f"{disk.source} is qcow2 compat 0.10, which cannot "
                                   "hold dirty bitmaps: always backed up in full (stop the "
                                   "VM and run qemu-img amend -o compat=1.1 to allow "
                                   "incremental backups)")
        if disk.note and disk.driver_type == "qcow2":
            warnings.append(f"{disk.target}: {disk.note}")
        out.append(disk)
    return out


def _choose_parent(dom: libvirt.virDomain, disks: list[DomainDisk],
                   parent: ParentBackup | None) -> tuple[str | None, str | None]:
    """(checkpoint to build on, or None; why a requested incremental became full)."""
    if parent is None:
        return None, None
    wanted = {d.target for d in disks if d.bitmaps}
    if not wanted:
        return None, "no disk can hold a dirty bitmap: took a full backup"
    name = check_name(parent.checkpoint)
    checkpoint = find_checkpoint(dom, name)
    if checkpoint is None:
        return None, (f"checkpoint {name} of the parent backup {parent.archive} is missing "
                      f"on {dom.name()} (lost, VM migrated to another node or redefined): "
                      "took a full backup")
    tracked = tracked_disks(checkpoint)
    if tracked != wanted:
        return None, (f"the disks changed since checkpoint {name} (it tracks "
                      f"{', '.join(sorted(tracked)) or 'none'}, the VM now has "
                      f"{', '.join(sorted(wanted))}): took a full backup")
    return name, None


def _begin_with_fallback(job: _Job) -> bool:
    """Start the pull job (retrying a taken port, falling back to full); made a checkpoint."""
    checkpoint = checkpoint_xml(job.checkpoint, job.disks)
    token = job.checkpoint.rsplit("-", 1)[-1]
    socket = job.server.socket_path(token)
    for attempt in range(PORT_ATTEMPTS + 1):
        port = 0 if socket else job.server.pick_port()
        scratch = {d.target: d.scratch_path(job.scratch_dir, token) for d in job.disks}
        xml = backup_xml(job.disks, job.server.host, port, job.incremental, scratch, socket)
        try:
            begin(job.dom, xml, checkpoint)
        except BackupError as exc:
            if job.incremental and exc.code == "checkpoint_unusable":
                job.reason = (f"checkpoint {job.incremental} cannot be used ({exc.message}): "
                              "took a full backup")
                job.incremental = None
                continue
            if socket is not None:  # QEMU could not listen there: TCP on the loopback
                job.warnings.append(f"NBD over TCP: no unix socket in "
                                    f"{job.server.socket_dir} ({exc.message})")
                socket = None
                continue
            if "in use" in exc.message and job.server.port is None and \
                    attempt + 1 < PORT_ATTEMPTS:
                continue
            raise
        job.port, job.socket = port, socket
        return checkpoint is not None
    raise BackupError(f"cannot start the backup of {job.dom.name()}")


def _stream_disks(job: _Job) -> None:
    """Connect to every export, plan all disks (for a known total), then stream each."""
    handles: dict[str, Any] = {}
    if job.socket is not None:
        _stream_through(job, "", 0, handles)
        return
    with job.server.reach(job.port) as (host, port):
        _stream_through(job, host, port, handles)


def _stream_through(job: _Job, host: str, port: int, handles: dict[str, Any]) -> None:
    try:
        plans = {}
        for disk in job.disks:
            bitmap = bitmap_context(disk.target) if job.incremental and disk.bitmaps else None
            handles[disk.target] = connect(host, port, disk.target, bitmap, job.socket)
            plans[disk.target] = plan_disk(handles[disk.target], bitmap)
        job.progress.total = sum(planned_bytes(p) for p in plans.values())
        for disk in job.disks:
            handle = handles[disk.target]
            mode = "incremental" if job.incremental and disk.bitmaps else "full"
            job.builder.begin_part("disk", disk.target, handle.get_size(), mode,
                                   target=disk.target, format=disk.driver_type,
                                   source_type=disk.source_type, source=disk.source,
                                   note=disk.note)
            digest = stream_disk(handle, plans[disk.target], job.builder,
                                 job.progress.advance, job.cancelled)
            job.builder.end_part(digest)
    finally:
        for handle in handles.values():
            with contextlib.suppress(Exception):
                handle.shutdown()
        handles.clear()  # libnbd closes a handle when its last reference goes


def _manifest(job: _Job, parent: ParentBackup | None, archive_name: str | None,
              made_checkpoint: bool) -> dict[str, Any]:
    dom = job.dom
    return {
        "kind": "incremental" if job.incremental else "full",
        "archive": archive_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "domain": {"name": dom.name(), "uuid": dom.UUIDString()},
        "checkpoint": job.checkpoint if made_checkpoint else None,
        "parent": {"archive": parent.archive, "checkpoint": parent.checkpoint}
        if job.incremental and parent else None,
        "fallback_reason": job.reason,
        "warnings": job.warnings,
    }


def _result(job: _Job, manifest: dict[str, Any], entry: TargetEntry, seconds: float,
            deleted: list[str]) -> BackupResult:
    disks = [p for p in manifest["parts"] if p["kind"] == "disk"]
    return BackupResult(
        kind=manifest["kind"], checkpoint=manifest["checkpoint"], parent=manifest["parent"],
        fallback_reason=manifest["fallback_reason"], size=entry.size if entry else 0,
        data_bytes=sum(p["data_bytes"] for p in disks),
        zero_bytes=sum(p["zero_bytes"] for p in disks), seconds=round(seconds, 3),
        disks=[{k: p[k] for k in ("target", "mode", "virtual_size", "data_bytes",
                                  "zero_bytes", "stored_length", "format")} for p in disks],
        entry=entry, manifest=manifest, warnings=job.warnings, deleted_checkpoints=deleted)

