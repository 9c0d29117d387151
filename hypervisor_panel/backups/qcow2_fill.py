"""Filling a new qcow2 file volume on this machine through qemu-nbd, in one write.

libvirt's upload stream stores bytes as they come, so a qcow2 target is otherwise filled
as a temporary raw volume and converted (every byte written twice, then read once more).
When the node is this machine and the volume is a file the panel may write, libnbd
starts ``qemu-nbd`` on it by socket activation (no socket path, no port, no shell) and
the data pieces are written at their offsets; holes are skipped (a new qcow2 reads as
zeros), and a final flush makes the image durable. ``qemu-nbd`` exits when the client
disconnects, so nothing outlives the call.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator

import libvirt

from .archive import BackupError
from .chain import Piece

try:  # python3-libnbd (Debian): also what reads the backups' NBD exports
    import nbd
except ImportError:  # pragma: no cover - the install steps provide it
    nbd = None  # type: ignore[assignment]

QEMU_NBD = "qemu-nbd"
FILE_POOLS = ("dir", "fs", "netfs")


def _qemu_nbd() -> str | None:
    """The qemu-nbd program, or None when it or libnbd's binding is missing."""
    return shutil.which(QEMU_NBD) if nbd is not None else None


def usable_pool(pool: libvirt.virStoragePool) -> bool:
    """Whether new volumes of ``pool`` (on this machine) are files qemu-nbd could fill."""
    if _qemu_nbd() is None:
        return False
    return ET.fromstring(pool.XMLDesc(0)).get("type") in FILE_POOLS  # noqa: S314 - libvirt


def usable(vol: libvirt.virStorageVol) -> bool:
    """Whether this process may open ``vol``, a new file volume of a usable pool."""
    return os.access(vol.path(), os.R_OK | os.W_OK)


def fill(vol: libvirt.virStorageVol, size: int, pieces: Iterator[Piece],
         advance: Callable[[int], None]) -> None:
    """Write ``pieces`` (covering ``[0, size)``) into the new qcow2 volume ``vol``."""
    program = _qemu_nbd()
    if program is None:
        raise BackupError("qemu-nbd (package qemu-utils) is missing")
    handle, done = nbd.NBD(), False
    try:
        handle.connect_systemd_socket_activation(
            [program, "--format=qcow2", "--cache=writeback",
             "--discard=unmap", "--", vol.path()])
        exported = handle.get_size()
        if exported != size:
            raise BackupError(f"volume {vol.name()} holds {exported} bytes, not {size}")
        for offset, length, data in pieces:
            if data is not None:
                handle.pwrite(data, offset)
            advance(length)
        handle.flush()
        handle.shutdown()
        done = True
    except nbd.Error as exc:
        raise BackupError(f"cannot write the restored disk into {vol.name()} through "
                          f"qemu-nbd: {exc.string}") from exc
    finally:
        if not done:  # qemu-nbd exits once its client has gone
            with contextlib.suppress(Exception):
                handle.shutdown()
        del handle  # closes the connection and reaps qemu-nbd
