"""A chain of archives (a full backup, then incrementals in order) read as one disk image.

:func:`check_chain` proves the archives belong together (same domain, each incremental's
parent is the archive before it); :func:`merged_disk` streams one disk of the chain as
``(offset, length, data-or-None)`` pieces covering the whole disk in order, reading each
archive's part once, sequentially (one ranged read per archive): where several archives
hold an offset, the newest wins; where none does, the disk reads zeros.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..backup import BackupTarget
from .archive import BackupError, ByteStream, Extent, read_part

Piece = tuple[int, int, bytes | None]


@dataclass(frozen=True)
class ArchiveRef:
    """An archive on a target."""

    target: BackupTarget
    name: str


def check_chain(chain: Sequence[ArchiveRef], manifests: Sequence[dict[str, Any]]) -> None:
    """BackupError (``broken_chain``) unless the manifests form a full-then-incrementals chain."""
    if not manifests:
        raise BackupError("no archive to restore", code="broken_chain")
    if manifests[0]["kind"] != "full":
        raise BackupError(f"{chain[0].name} is an incremental backup: a chain starts with a "
                          "full one", code="broken_chain")
    uuid = manifests[0]["domain"]["uuid"]
    for i in range(1, len(manifests)):
        here, before = manifests[i], manifests[i - 1]
        parent = here.get("parent") or {}
        if here["kind"] != "incremental":
            raise BackupError(f"{chain[i].name} is a full backup: restore it on its own, "
                              "or start the chain with it", code="broken_chain")
        if here["domain"]["uuid"] != uuid:
            raise BackupError(f"{chain[i].name} is a backup of another VM", code="broken_chain")
        if parent.get("archive") != chain[i - 1].name or \
                parent.get("checkpoint") != before.get("checkpoint"):
            raise BackupError(f"{chain[i].name} builds on {parent.get('archive')!r} "
                              f"(checkpoint {parent.get('checkpoint')!r}), not on "
                              f"{chain[i - 1].name}", code="broken_chain")


def disk_layers(chain: Sequence[ArchiveRef], manifests: Sequence[dict[str, Any]],
                dev: str) -> list[tuple[ArchiveRef, dict[str, Any]]]:
    """The (archive, part) layers of disk ``dev``, oldest first, from its newest full part."""
    layers = []
    for ref, manifest in zip(reversed(chain), reversed(manifests), strict=True):
        part = next((p for p in manifest["parts"]
                     if p["kind"] == "disk" and p["name"] == dev), None)
        if part is None:
            raise BackupError(f"{ref.name} has no disk {dev} although a newer backup "
                              "builds on it", code="broken_chain")
        layers.append((ref, part))
        if part["mode"] == "full":
            return layers[::-1]
    raise BackupError(f"disk {dev} has no full copy in the chain", code="broken_chain")


class _Layer:
    """One archive's part of the disk, read as a sequence of extents."""

    def __init__(self, ref: ArchiveRef, part: dict[str, Any], verify: bool) -> None:
        self.stream = ByteStream(ref.target.open_read(ref.name, part["stored_offset"],
                                                      part["stored_length"]),
                                 part["stored_offset"])
        self.extents = read_part(self.stream, part, verify=verify)
        self.current: Extent | None = None
        self.advance()

    def advance(self) -> None:
        """Move to the next extent (None at the end, once the hashes are checked)."""
        self.current = next(self.extents, None)

    def skip_to(self, position: int) -> None:
        """Drop the extents that end at or before ``position``."""
        while self.current is not None and self.current.end <= position:
            self.advance()

    def drain(self) -> None:
        """Read the rest, so that the part's hashes are checked."""
        while self.current is not None:
            self.advance()


def _step(layers: list[_Layer], position: int, size: int) -> Piece:
    """The next piece from ``position``: the newest layer covering it, up to the next
    boundary (the end of that extent, or the start of an extent in a newer layer)."""
    for layer in layers:
        layer.skip_to(position)
    top = None
    for index in range(len(layers) - 1, -1, -1):
        current = layers[index].current
        if current is not None and current.offset <= position:
            top = index
            break
    limit = size
    for layer in layers[(top + 1 if top is not None else 0):]:
        if layer.current is not None:
            limit = min(limit, layer.current.offset)
    if top is None:
        return position, limit - position, None
    extent = layers[top].current
    assert extent is not None
    limit = min(limit, extent.end)
    data = extent.data()
    if data is not None:
        data = data[position - extent.offset:limit - extent.offset]
    return position, limit - position, data


def merged_disk(layers: Sequence[tuple[ArchiveRef, dict[str, Any]]], size: int,
                verify: bool = False) -> Iterator[Piece]:
    """Pieces covering ``[0, size)`` in order; zero pieces are merged, data ones are not.

    Every layer's hashes are checked once it is read to its end (``verify`` also checks the
    logical hash, decompressing every frame); a mismatch raises ArchiveDamaged, after the
    pieces before it were yielded: the consumer must discard what it wrote.
    """
    opened: list[_Layer] = []
    try:
        for ref, part in layers:
            opened.append(_Layer(ref, part, verify))
        position, zero = 0, 0
        while position < size:
            offset, length, data = _step(opened, position, size)
            position = offset + length
            if data is None:
                zero += length
                continue
            if zero:
                yield offset - zero, zero, None
                zero = 0
            yield offset, length, data
        if zero:
            yield size - zero, zero, None
        for layer in opened:
            layer.drain()
    finally:
        for layer in opened:
            with contextlib.suppress(Exception):
                layer.stream.close()
