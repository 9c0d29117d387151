"""Writing a restored disk into a NEW volume, through libvirt (so on any node).

``virStorageVol.upload`` stores bytes as they come (it knows no image format), so:

* a raw target is made with the back end's ``create_volume`` and filled with one
  sparse upload stream (holes are skipped on file volumes, written as zeros on block
  devices, whose new extents may hold old data);
* a qcow2 target on this machine's file storage is written once through qemu-nbd (see
  :mod:`.qcow2_fill`); elsewhere it is filled as a temporary raw volume in the same pool,
  then copied into a new qcow2 (compat 1.1) volume with ``createXMLFrom`` (libvirt runs
  ``qemu-img convert`` on the node, which keeps it sparse), and the temporary volume is
  deleted;
* a back end that streams volumes itself (RBD: ``upload`` overridden) gets the image as
  a plain byte stream through its own ``upload``.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import libvirt

from ..storage import StorageBackend, call_libvirt
from ..virt.errors import libvirt_message
from . import qcow2_fill
from .archive import CHUNK, ZERO_CHUNK, BackupError
from .chain import Piece


@dataclass(frozen=True)
class DiskPlacement:
    """Where a restored disk goes: a storage back end, a new volume name, its format."""

    backend: StorageBackend
    name: str
    fmt: str | None = None  # qcow2 | raw; None: the back end's own format


@dataclass(frozen=True)
class RestoredVolume:
    """A volume a restore made."""

    target: str  # the disk's dev in the backed-up domain (vda, ...)
    pool: str
    name: str
    path: str
    format: str
    capacity: int


Advance = Callable[[int], None]


def target_format(placement: DiskPlacement) -> str:
    """The format of the volume a placement makes."""
    fmt = placement.fmt or placement.backend.volume_format or "raw"
    if fmt not in ("qcow2", "raw"):
        raise BackupError(f"cannot restore into a {fmt} volume (qcow2 or raw only)")
    return fmt


def _send(stream: libvirt.virStream, data: bytes) -> None:
    while data:
        sent = stream.send(data)
        if sent is None or sent < 0:
            raise BackupError("the volume upload stream refused data")
        data = data[sent:]


def _file_of(vol: libvirt.virStorageVol) -> int | None:
    """An open descriptor on the file of a file volume this process may write (a node on
    this machine), else None: the upload stream is used."""
    if vol.info()[0] != libvirt.VIR_STORAGE_VOL_FILE:
        return None
    try:
        return os.open(vol.path(), os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _write_file(fd: int, pieces: Iterator[Piece], advance: Advance, durable: bool) -> None:
    """Write the data pieces at their offsets into a new, sparse file (holes stay holes):
    no copy through libvirtd's stream and its I/O helper."""
    for offset, length, data in pieces:
        if data is not None:
            view, done = memoryview(data), 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], offset + done)
        advance(length)
    if durable:
        os.fsync(fd)


def upload_pieces(conn: libvirt.virConnect, vol: libvirt.virStorageVol, size: int,
                  pieces: Iterator[Piece], advance: Advance, local: bool = False,
                  durable: bool = True) -> None:
    """Write ``pieces`` (covering ``[0, size)``) into ``vol``: straight into its file when
    ``local`` (the node is this machine) and it is a file volume, else with one upload
    stream. ``durable``: the file is synced (not for a temporary volume)."""
    fd = _file_of(vol) if local else None
    if fd is not None:
        try:
            _write_file(fd, pieces, advance, durable)
        finally:
            os.close(fd)
        return
    sparse = vol.info()[0] == libvirt.VIR_STORAGE_VOL_FILE
    stream = conn.newStream(0)
    flags = libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM if sparse else 0
    call_libvirt(vol.upload, stream, 0, size, flags, what=f"upload to volume {vol.name()}")
    try:
        for _offset, length, data in pieces:
            if data is not None:
                _send(stream, data)
            elif sparse:
                stream.sendHole(length, 0)
            else:
                for start in range(0, length, CHUNK):
                    _send(stream, ZERO_CHUNK[:min(CHUNK, length - start)])
            advance(length)
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise


class PieceReader(io.RawIOBase):
    """The pieces as a readable file (zeros for holes), for a back end's own ``upload``."""

    def __init__(self, pieces: Iterator[Piece], advance: Advance) -> None:
        self.pieces, self.advance = pieces, advance
        self.data, self.pos, self.zeros = b"", 0, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Fill ``buffer`` from the pieces (zeros for holes); 0 at the end."""
        while self.pos >= len(self.data) and not self.zeros:
            piece = next(self.pieces, None)
            if piece is None:
                return 0
            self.advance(piece[1])
            self.data, self.pos = (piece[2] or b""), 0
            self.zeros = 0 if piece[2] is not None else piece[1]
        if self.zeros:
            n = min(len(buffer), self.zeros, CHUNK)
            buffer[:n] = ZERO_CHUNK[:n]
            self.zeros -= n
            return n
        n = min(len(buffer), len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def _described(vol: libvirt.virStorageVol, dev: str, fmt: str) -> RestoredVolume:
    return RestoredVolume(dev, vol.storagePoolLookupByVolume().name(), vol.name(), vol.path(),
                          fmt, vol.info()[1])


def write_disk(conn: libvirt.virConnect, dev: str, placement: DiskPlacement, size: int,
               pieces: Iterator[Piece], advance: Advance,
               created: list[tuple[StorageBackend, str]], local: bool = False
               ) -> RestoredVolume:
    """Make the new volume and fill it; every volume made is appended to ``created``.
    ``local``: the node is this machine (file volumes are written directly)."""
    backend, fmt = placement.backend, target_format(placement)
    pool = backend.pool(conn)
    with contextlib.suppress(libvirt.libvirtError):
        pool.refresh(0)
    if placement.name in pool.listVolumes():
        raise BackupError(f"volume {placement.name} already exists in pool {pool.name()}: "
                          "a restore never writes over a volume", code="volume_exists")
    if type(backend).upload is not StorageBackend.upload and fmt != "qcow2":
        vol = backend.create_volume(conn, placement.name, size, placement.fmt)
        created.append((backend, placement.name))
        reader = io.BufferedReader(PieceReader(pieces, advance), CHUNK)
        if "fresh" in inspect.signature(backend.upload).parameters:
            backend.upload(conn, placement.name, reader, size, fresh=True)  # stays thin
        else:  # a plugin written before the hint
            backend.upload(conn, placement.name, reader, size)
        return _described(vol, dev, fmt)
    if fmt == "raw":
        vol = backend.create_volume(conn, placement.name, size, placement.fmt)
        created.append((backend, placement.name))
        upload_pieces(conn, vol, size, pieces, advance, local)
        return _described(vol, dev, fmt)
    if local and qcow2_fill.usable_pool(pool):
        vol = backend.create_volume(conn, placement.name, size, "qcow2")
        created.append((backend, placement.name))
        if qcow2_fill.usable(vol):  # one write through qemu-nbd, no temporary raw copy
            qcow2_fill.fill(vol, size, pieces, advance)
            return _described(vol, dev, fmt)
        _delete(backend, conn, placement.name)
        created.remove((backend, placement.name))
    temp = f"{placement.name}.restore-{secrets.token_hex(3)}.raw"
    raw = call_libvirt(pool.createXML, backend.volume_xml(temp, size, "raw"), 0,
                       what=f"create the temporary volume {temp}")
    created.append((backend, temp))
    upload_pieces(conn, raw, size, pieces, advance, local, durable=False)
    vol = call_libvirt(pool.createXMLFrom, backend.volume_xml(placement.name, size, "qcow2"),
                       raw, 0, what=f"convert the restored disk into {placement.name}")
    created.append((backend, placement.name))
    _delete(backend, conn, temp)
    created.remove((backend, temp))
    return _described(vol, dev, fmt)


def _delete(backend: StorageBackend, conn: libvirt.virConnect, name: str) -> None:
    try:
        backend.delete_volume(conn, name)
    except Exception as exc:  # noqa: BLE001 - reported by the caller's cleanup
        message = getattr(exc, "message", None) or (
            libvirt_message(exc) if isinstance(exc, libvirt.libvirtError) else str(exc))
        raise BackupError(f"cannot delete volume {name}: {message}") from exc


def remove_volumes(conn: libvirt.virConnect, created: list[tuple[StorageBackend, str]]
                   ) -> list[str]:
    """Delete what a failed restore made (newest first); the problems met."""
    problems = []
    for backend, name in reversed(created):
        try:
            _delete(backend, conn, name)
        except BackupError as exc:
            problems.append(exc.message)
    created.clear()
    return problems
