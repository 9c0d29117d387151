"""The backup target contract: where backup archives are kept (local disk, FTP, ...).

A plugin registers :class:`BackupTarget` subclasses with ``register_backup_targets``. A
target stores opaque **archives** by name (``NAME`` below: ``[A-Za-z0-9._-]``, at most 128
characters, optionally in one level of folder ``folder/name``; the backup service chooses
names). Writing is atomic: :meth:`BackupTarget.open_write` writes under a temporary name
that :meth:`BackupTarget.list` never shows, and :meth:`ArchiveWriter.publish` renames it
into place only after the bytes written were checked (size, and the caller's SHA-256), so
an interrupted backup is never listed as a backup. Where the protocol allows it, a broken
upload resumes (:meth:`BackupTarget.open_write` with ``resume=True`` continues after what
the target already holds under the temporary name).

Options marked ``writeOnly`` in ``options_schema`` are secrets: stored server-side, never
returned by the API and never logged (the service removes them from every answer).
All errors are :class:`TargetError` (a 422 with a message that says what and why, never a
password).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import PanelError

__all__ = ["ARCHIVE_NAME", "PARTIAL_PREFIX", "ArchiveWriter", "BackupTarget", "TargetEntry",
           "TargetError", "check_archive_name", "partial_name"]

#: An archive name: one optional folder, then a file name; no ``..``, no leading dot.
ARCHIVE_NAME = r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,127}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME = re.compile(ARCHIVE_NAME)
#: The prefix of temporary (unpublished) names: ``list`` never shows them.
PARTIAL_PREFIX = ".partial-"


class TargetError(PanelError):
    """A backup target operation failed (unreachable, refused, full, ...)."""

    status, code = 422, "backup_target_error"


def check_archive_name(name: str) -> str:
    """``name`` if it is a valid archive name, else :class:`TargetError`."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise TargetError(f"invalid archive name {name!r}")
    return name


def partial_name(name: str) -> str:
    """The temporary name archive ``name`` is written under: ``folder/.partial-file``."""
    folder, _, base = check_archive_name(name).rpartition("/")
    return f"{folder}/{PARTIAL_PREFIX}{base}" if folder else PARTIAL_PREFIX + base


@dataclass(frozen=True)
class TargetEntry:
    """One published archive on a target."""

    name: str
    size: int
    mtime: float | None = None  # seconds since the epoch, when the target knows it


class ArchiveWriter:
    """An archive being written under a temporary name (use as a context manager).

    ``offset`` is how many bytes the target already holds (0, or more when resuming).
    Leaving the ``with`` block without :meth:`publish` calls :meth:`abort`.
    """

    offset: int = 0

    def write(self, data: bytes) -> None:
        """Append ``data``; raises :class:`TargetError` when the target fails or is full."""
        raise NotImplementedError

    def publish(self, expected_size: int) -> TargetEntry:
        """Finish the upload, check the stored size, rename the temporary file into place."""
        raise NotImplementedError

    def abort(self, keep_partial: bool = False) -> None:
        """Stop writing; remove the temporary file unless ``keep_partial`` (to resume later)."""
        raise NotImplementedError

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not getattr(self, "published", False):
            self.abort(keep_partial=exc[0] is not None and getattr(self, "resumable", False))


class BackupTarget:
    """Base class for backup targets; one instance per target record (``target``).

    ``target`` is the stored record: ``{"id", "name", "backend", "options"}`` with secrets
    included (server-side only). Instances are cheap and short-lived: the service makes one
    per operation, so an instance need not be thread-safe.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    #: A broken upload can continue where it stopped (REST/APPE, append to a file).
    resumable: ClassVar[bool] = False

    def __init__(self, target: dict[str, Any]) -> None:
        self.target = target
        self.options: dict[str, Any] = target.get("options", {})

    def check(self) -> None:
        """Connect, log in and check that the folder is writable (when a target is saved)."""
        raise NotImplementedError

    def open_write(self, name: str, resume: bool = False) -> ArchiveWriter:
        """Start writing archive ``name`` under a temporary name (continue one if ``resume``)."""
        raise NotImplementedError

    def open_read(self, name: str, offset: int = 0,
                  length: int | None = None) -> Iterator[bytes]:
        """Stream the bytes of a published archive from ``offset`` (``length`` bytes or all)."""
        raise NotImplementedError

    def list(self, folder: str = "") -> list[TargetEntry]:
        """Published archives (in ``folder``, or at the top and in every folder when "")."""
        raise NotImplementedError

    def stat(self, name: str) -> TargetEntry | None:
        """The published archive ``name``, or None when there is none."""
        raise NotImplementedError

    def delete(self, name: str) -> None:
        """Remove a published archive (no error when it is already gone)."""
        raise NotImplementedError

    def list_partial(self) -> list[TargetEntry]:
        """Temporary (unpublished) archives, with the names they would be published under."""
        raise NotImplementedError

    def delete_partial(self, name: str) -> None:
        """Remove the temporary file of archive ``name`` (no error when there is none)."""
        raise NotImplementedError

    def free_space(self) -> int | None:
        """Bytes free on the target, or None when the protocol cannot tell."""
        return None
