"""A tiny directory-backed BackupTarget for engine tests (no plugin, no panel)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from hypervisor_panel.backup import (
    ArchiveWriter,
    BackupTarget,
    TargetEntry,
    TargetError,
    check_archive_name,
)

PARTIAL = ".partial-"


class DirWriter(ArchiveWriter):
    """Writes ``.partial-NAME``; publish checks the size and renames it."""

    def __init__(self, root: Path, name: str, fail_after: int | None = None) -> None:
        self.final, self.temp = root / name, root / f"{PARTIAL}{name}"
        self.fh = open(self.temp, "wb")  # noqa: SIM115 - closed by publish/abort
        self.written, self.published, self.aborted = 0, False, False
        self.fail_after = fail_after
        self.writes = 0

    def write(self, data: bytes) -> None:
        if self.fail_after is not None and self.written + len(data) > self.fail_after:
            raise TargetError(f"the test target is full after {self.written} bytes")
        self.fh.write(data)
        self.written += len(data)
        self.writes += 1

    def publish(self, expected_size: int) -> TargetEntry:
        self.fh.close()
        size = self.temp.stat().st_size
        if size != expected_size:
            raise TargetError(f"stored {size} bytes, expected {expected_size}")
        os.replace(self.temp, self.final)
        self.published = True
        return TargetEntry(self.final.name, size, self.final.stat().st_mtime)

    def abort(self, keep_partial: bool = False) -> None:
        self.aborted = True
        if not self.fh.closed:
            self.fh.close()
        if not keep_partial:
            self.temp.unlink(missing_ok=True)


class DirTarget(BackupTarget):
    """Archives as files in ``options["path"]``; ``fail_after`` makes writers fail."""

    name: ClassVar[str] = "test-dir"
    fail_after: int | None = None

    @property
    def root(self) -> Path:
        return Path(self.options["path"])

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def open_write(self, name: str, resume: bool = False) -> DirWriter:
        self.root.mkdir(parents=True, exist_ok=True)
        return DirWriter(self.root, check_archive_name(name), self.fail_after)

    def open_read(self, name: str, offset: int = 0,
                  length: int | None = None) -> Iterator[bytes]:
        path = self.root / check_archive_name(name)
        if not path.is_file():
            raise TargetError(f"no archive {name}")
        return _chunks(path, offset, length)

    def list(self, folder: str = "") -> list[TargetEntry]:
        return [e for e in (self.stat(p.name) for p in sorted(self.root.iterdir())
                            if not p.name.startswith(".")) if e is not None]

    def stat(self, name: str) -> TargetEntry | None:
        path = self.root / check_archive_name(name)
        if not path.is_file():
            return None
        st = path.stat()
        return TargetEntry(name, st.st_size, st.st_mtime)

    def delete(self, name: str) -> None:
        (self.root / check_archive_name(name)).unlink(missing_ok=True)

    def list_partial(self) -> list[TargetEntry]:
        return [TargetEntry(p.name[len(PARTIAL):], p.stat().st_size)
                for p in self.root.glob(f"{PARTIAL}*")]

    def delete_partial(self, name: str) -> None:
        (self.root / f"{PARTIAL}{name}").unlink(missing_ok=True)


def _chunks(path: Path, offset: int, length: int | None, size: int = 256 * 1024
            ) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(offset)
        left = length
        while left is None or left > 0:
            block = fh.read(size if left is None else min(size, left))
            if not block:
                return
            if left is not None:
                left -= len(block)
            yield block
