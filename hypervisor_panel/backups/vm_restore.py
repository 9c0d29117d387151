"""Restore VM disks from a chain of archives into NEW volumes (the service swaps them in).

:func:`restore_chain` checks that the archives form a chain, verifies every archive
(every hash) before it writes anything, then writes each chosen disk into a new volume
(see :mod:`.volume_sink` for how, through libvirt on any node). On any failure, every
volume it made is deleted again; volumes that existed before are never touched.
:func:`verify_chain` is the check on its own; :func:`read_metadata` returns the backed-up
domain XML and VM record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import libvirt

from ..storage import StorageBackend
from .archive import (
    BackupCancelled,
    BackupError,
    CancelCheck,
    Progress,
    part_of,
    read_blob,
    read_manifest,
    verify_archive,
)
from .chain import ArchiveRef, Piece, check_chain, disk_layers, merged_disk
from .volume_sink import DiskPlacement, RestoredVolume, remove_volumes, write_disk

__all__ = ["ArchiveRef", "DiskPlacement", "RestoreResult", "RestoredVolume", "load_chain",
           "read_metadata", "restore_chain", "verify_chain"]


@dataclass
class RestoreResult:
    """The new volumes by disk dev, and the newest archive's domain XML and VM record."""

    volumes: dict[str, RestoredVolume]
    domain_xml: str
    vm_record: dict[str, Any]
    manifests: list[dict[str, Any]]
    seconds: float
    disks: dict[str, int] = field(default_factory=dict)  # dev -> virtual size


def load_chain(chain: Sequence[ArchiveRef]) -> list[dict[str, Any]]:
    """The manifests of ``chain`` (tail reads only), checked to form one chain."""
    manifests = [read_manifest(ref.target, ref.name) for ref in chain]
    check_chain(chain, manifests)
    return manifests


def verify_chain(chain: Sequence[ArchiveRef], progress: Progress | None = None,
                 cancelled: CancelCheck | None = None) -> list[dict[str, Any]]:
    """Re-read every archive of ``chain``, checking every hash and the chain links."""
    manifests = load_chain(chain)
    total = sum(m["archive_size"] for m in manifests)
    done = 0
    for ref, manifest in zip(chain, manifests, strict=True):
        def step(n: int, _total: int, base: int = done) -> None:
            if progress is not None:
                progress(base + n, total)

        verify_archive(ref.target, ref.name, step, cancelled)
        done += manifest["archive_size"]
    return manifests


def read_metadata(ref: ArchiveRef, manifest: dict[str, Any] | None = None
                  ) -> tuple[str, dict[str, Any]]:
    """The domain XML and VM record stored in an archive (hash-checked)."""
    manifest = manifest or read_manifest(ref.target, ref.name)
    xml_part, record_part = part_of(manifest, "domain-xml"), part_of(manifest, "vm-record")
    if xml_part is None or record_part is None:
        raise BackupError(f"{ref.name} holds no domain XML or VM record")
    xml = read_blob(ref.target, ref.name, xml_part).decode()
    try:
        record = json.loads(read_blob(ref.target, ref.name, record_part) or b"{}")
    except ValueError as exc:
        raise BackupError(f"{ref.name}: the VM record is not JSON") from exc
    return xml, record


class _Progress:
    """Throttled ``progress(done, total)`` over the verify and the write phases."""

    def __init__(self, callback: Progress | None, total: int) -> None:
        self.callback, self.total, self.done, self.last = callback, total, 0, 0.0

    def set(self, done: int) -> None:
        """Report ``done`` bytes (throttled)."""
        self.done = done
        now = time.monotonic()
        if self.callback is not None and (now - self.last >= 0.25 or done >= self.total):
            self.last = now
            self.callback(done, self.total)

    def advance(self, n: int) -> None:
        """Count ``n`` more bytes."""
        self.set(self.done + n)


def _check_placements(manifest: dict[str, Any],
                      placements: Mapping[str, DiskPlacement]) -> dict[str, int]:
    sizes = {p["name"]: int(p["virtual_size"]) for p in manifest["parts"]
             if p["kind"] == "disk"}
    unknown = sorted(set(placements) - set(sizes))
    if unknown:
        raise BackupError(f"the backup has no disk {', '.join(unknown)} (it has "
                          f"{', '.join(sorted(sizes)) or 'none'})", code="no_such_disk")
    names = [p.name for p in placements.values()]
    if len(set(names)) != len(names):
        raise BackupError("two disks cannot be restored into the same volume")
    return {dev: sizes[dev] for dev in placements}


def restore_chain(conn: libvirt.virConnect, chain: Sequence[ArchiveRef],
                  placements: Mapping[str, DiskPlacement], *, verify_first: bool = True,
                  progress: Progress | None = None,
                  cancelled: CancelCheck | None = None, local: bool = False
                  ) -> RestoreResult:
    """Restore the disks in ``placements`` (dev -> new volume) from ``chain``, oldest first.
    ``local``: ``conn`` is this machine's libvirtd (file volumes are written directly).

    ``verify_first`` (the default) re-reads and checks every archive before anything is
    written; without it the archives are read once and checked while written (a bad hash
    deletes the new volumes). Either way the result is all new volumes or none.
    """
    began = time.monotonic()
    manifests = load_chain(chain)
    sizes = _check_placements(manifests[-1], placements)
    verify_total = sum(m["archive_size"] for m in manifests) if verify_first else 0
    meter = _Progress(progress, verify_total + sum(sizes.values()))
    if verify_first:
        verify_chain(chain, lambda done, _total: meter.set(done), cancelled)
    domain_xml, vm_record = read_metadata(chain[-1], manifests[-1])
    created: list[tuple[StorageBackend, str]] = []
    volumes: dict[str, RestoredVolume] = {}
    try:
        for dev, placement in placements.items():
            layers = disk_layers(chain, manifests, dev)
            pieces = merged_disk(layers, sizes[dev], verify=not verify_first)
            try:
                volumes[dev] = write_disk(conn, dev, placement, sizes[dev],
                                          _cancellable(pieces, cancelled), meter.advance,
                                          created, local)
            finally:
                pieces.close()
    except BaseException as exc:
        problems = remove_volumes(conn, created)
        if problems and isinstance(exc, BackupError):
            exc.message += "; cleanup: " + "; ".join(problems)
        raise
    return RestoreResult(volumes, domain_xml, vm_record, manifests,
                         round(time.monotonic() - began, 3), sizes)


def _cancellable(pieces: Iterator[Piece], cancelled: CancelCheck | None) -> Iterator[Piece]:
    for piece in pieces:
        if cancelled is not None and cancelled():
            raise BackupCancelled("the restore was cancelled")
        yield piece
