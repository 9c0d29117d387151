"""Helpers for the panel backup tests: a local ArchiveWriter, tree snapshots, frame surgery."""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from pathlib import Path

from hypervisor_panel.backup import PARTIAL_PREFIX, ArchiveWriter, TargetEntry
from hypervisor_panel.backups.panel_format import MAGIC


class LocalWriter(ArchiveWriter):
    """The ArchiveWriter contract on a local folder: ``.partial-NAME``, renamed on publish."""

    def __init__(self, folder: Path, name: str, fail_after: int | None = None) -> None:
        self.final = folder / name
        self.partial = folder / (PARTIAL_PREFIX + name)
        self.fh = open(self.partial, "wb")  # noqa: SIM115 - closed by publish/abort
        self.fail_after = fail_after
        self.published = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        if self.fail_after is not None and self.offset + len(data) > self.fail_after:
            raise OSError("the target is full")
        self.fh.write(data)
        self.offset += len(data)

    def publish(self, expected_size: int) -> TargetEntry:
        self.fh.close()
        assert self.partial.stat().st_size == expected_size == self.offset
        os.replace(self.partial, self.final)
        self.published = True
        return TargetEntry(self.final.name, expected_size)

    def abort(self, keep_partial: bool = False) -> None:
        self.fh.close()
        self.aborted = True
        if not keep_partial:
            self.partial.unlink(missing_ok=True)


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under ``root`` (itself as ".") -> (mode, SHA-256 of a file's bytes)."""
    out = {".": (stat.S_IMODE(root.stat().st_mode), "")}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[path.relative_to(root).as_posix()] = (stat.S_IMODE(st.st_mode), digest)
    return out


def split_frames(archive: bytes) -> tuple[bytes, list[bytes]]:
    """(magic + header, the encrypted chunk frames) of an encrypted panel archive."""
    (length,) = struct.unpack(">I", archive[len(MAGIC):len(MAGIC) + 4])
    head_end = len(MAGIC) + 4 + length
    frames, pos = [], head_end
    while pos < len(archive):
        (word,) = struct.unpack(">I", archive[pos:pos + 4])
        end = pos + 4 + (word & 0x7FFFFFFF)
        frames.append(archive[pos:end])
        pos = end
    return archive[:head_end], frames
