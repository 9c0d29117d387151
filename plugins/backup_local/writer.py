"""Writing one archive of a ``local`` target: ``.partial-NAME``, fsync, then os.replace."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from hypervisor_panel.backup import ArchiveWriter, TargetEntry, TargetError, partial_name

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalWriter(ArchiveWriter):
    """Writes ``root/folder/.partial-name``; :meth:`publish` renames it to ``root/name``."""

    resumable = True

    def __init__(self, root: Path, name: str, resume: bool) -> None:
        self.name, self.root = name, root
        self.final, self.temp = root / name, root / partial_name(name)
        self.published = False
        self.written = 0
        self._fd: int | None = None
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if resume else os.O_TRUNC)
        try:
            if not self.temp.parent.is_dir():
                self.temp.parent.mkdir(mode=0o700)
            self._fd = os.open(self.temp, flags, 0o600)
            self.offset = os.fstat(self._fd).st_size
        except OSError as exc:
            raise TargetError(f"cannot write archive {name} in {root}: {exc.strerror}") from exc

    def _fail(self, exc: OSError, doing: str) -> TargetError:
        self._close()
        if exc.errno in FULL:
            with contextlib.suppress(OSError):
                self.temp.unlink()
            return TargetError(f"the backup folder {self.root} is full ({exc.strerror}) while "
                               f"{doing} archive {self.name}; the partial file was removed")
        return TargetError(f"{doing} archive {self.name} in {self.root} failed: {exc.strerror}")

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise TargetError(f"archive {self.name} is not open for writing")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise self._fail(exc, "writing") from exc
        self.written += len(data)

    def publish(self, expected_size: int) -> TargetEntry:
        if self._fd is None:
            raise TargetError(f"archive {self.name} is not open for writing")
        try:
            os.fsync(self._fd)
            size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise self._fail(exc, "writing") from exc
        self._close()
        if size != expected_size:
            if size > expected_size:
                with contextlib.suppress(OSError):
                    self.temp.unlink()
            raise TargetError(f"archive {self.name}: {size} bytes were stored, "
                              f"{expected_size} expected; not published")
        try:
            os.replace(self.temp, self.final)
            _fsync_dir(self.final.parent)
            st = self.final.stat()
        except OSError as exc:
            raise TargetError(f"cannot publish archive {self.name}: {exc.strerror}") from exc
        self.published = True
        return TargetEntry(self.name, st.st_size, st.st_mtime)

    def abort(self, keep_partial: bool = False) -> None:
        self._close()
        if not keep_partial:
            with contextlib.suppress(OSError):
                self.temp.unlink()
