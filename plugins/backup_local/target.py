"""The ``local`` target: archives as files in a folder of the panel's machine."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from hypervisor_panel.backup import (
    PARTIAL_PREFIX,
    BackupTarget,
    TargetEntry,
    TargetError,
    check_archive_name,
    partial_name,
)

from .paths import PATH_PATTERN, check_folder
from .writer import LocalWriter

CHUNK = 1024 * 1024


def _valid(name: str) -> bool:
    try:
        check_archive_name(name)
    except TargetError:
        return False
    return True


def _scan(folder: Path, prefix: str, partial: bool) -> Iterator[TargetEntry]:
    """Archives (or, with ``partial``, temporary files) directly in ``folder``."""
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if partial != name.startswith(PARTIAL_PREFIX):
                continue
            name = prefix + (name[len(PARTIAL_PREFIX):] if partial else name)
            if entry.is_file(follow_symlinks=False) and _valid(name):
                st = entry.stat(follow_symlinks=False)
                yield TargetEntry(name, st.st_size, st.st_mtime)


def _read(fh: BinaryIO, length: int | None) -> Iterator[bytes]:
    with fh:
        left = length
        while left is None or left > 0:
            block = fh.read(CHUNK if left is None else min(CHUNK, left))
            if not block:
                return
            if left is not None:
                left -= len(block)
            yield block


class LocalTarget(BackupTarget):
    """A folder on the panel's machine (created 0700 when missing)."""

    name: ClassVar[str] = "local"
    description: ClassVar[str] = "A folder on the panel's machine"
    resumable: ClassVar[bool] = True
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {
                "type": "string", "title": "Folder", "pattern": PATH_PATTERN,
                "minLength": 2, "maxLength": 255,
                "description": "Absolute path on the panel's machine; created (0700) if "
                               "missing; system folders are refused",
            },
        },
    }

    def _root(self, create: bool = False) -> Path:
        root = check_folder(self.options.get("path"))
        try:
            if create and not root.exists():
                root.mkdir(parents=True, mode=0o700)
                root.chmod(0o700)
        except OSError as exc:
            raise TargetError(f"cannot create the backup folder {root}: {exc.strerror}") from exc
        if not root.is_dir():
            raise TargetError(f"the backup folder {root} does not exist (or is not a folder)")
        return root

    def check(self) -> None:
        probe = self._root(create=True) / f".hvp-probe-{secrets.token_hex(4)}"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"probe")
                os.fsync(fh.fileno())
        except OSError as exc:
            raise TargetError(f"the backup folder {probe.parent} is not writable: "
                              f"{exc.strerror}") from exc
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def open_write(self, name: str, resume: bool = False) -> LocalWriter:
        check_archive_name(name)
        return LocalWriter(self._root(create=True), name, resume)

    def open_read(self, name: str, offset: int = 0,
                  length: int | None = None) -> Iterator[bytes]:
        path = self._root() / check_archive_name(name)
        if offset < 0 or (length is not None and length < 0):
            raise TargetError(f"bad range {offset}+{length} for archive {name}")
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by _read
        except FileNotFoundError:
            raise TargetError(f"no archive {name} in {path.parent}") from None
        except OSError as exc:
            raise TargetError(f"cannot read archive {name}: {exc.strerror}") from exc
        fh.seek(offset)
        return _read(fh, length)

    def _folders(self, root: Path, folder: str) -> list[tuple[Path, str]]:
        if folder:
            if "/" in folder:
                raise TargetError(f"invalid archive folder {folder!r}")
            check_archive_name(folder)
            return [(root / folder, folder + "/")] if (root / folder).is_dir() else []
        found = [(root, "")]
        with os.scandir(root) as entries:
            found += [(Path(e.path), e.name + "/") for e in entries
                      if e.is_dir(follow_symlinks=False) and _valid(e.name)]
        return found

    def _entries(self, folder: str, partial: bool) -> list[TargetEntry]:
        root = self._root()
        try:
            out = [e for path, prefix in self._folders(root, folder)
                   for e in _scan(path, prefix, partial)]
        except OSError as exc:
            raise TargetError(f"cannot list the backup folder {root}: {exc.strerror}") from exc
        return sorted(out, key=lambda e: e.name)

    def list(self, folder: str = "") -> list[TargetEntry]:
        return self._entries(folder, partial=False)

    def list_partial(self) -> list[TargetEntry]:
        return self._entries("", partial=True)

    def stat(self, name: str) -> TargetEntry | None:
        path = self._root() / check_archive_name(name)
        try:
            st = path.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TargetError(f"cannot stat archive {name}: {exc.strerror}") from exc
        return TargetEntry(name, st.st_size, st.st_mtime) if path.is_file() else None

    def _unlink(self, path: Path, what: str) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise TargetError(f"cannot delete {what}: {exc.strerror}") from exc

    def delete(self, name: str) -> None:
        self._unlink(self._root() / check_archive_name(name), f"archive {name}")

    def delete_partial(self, name: str) -> None:
        self._unlink(self._root() / partial_name(name), f"the partial upload of {name}")

    def free_space(self) -> int | None:
        try:
            st = os.statvfs(self._root())
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise TargetError(f"cannot read the free space: {exc.strerror}") from exc
        return st.f_bavail * st.f_frsize
