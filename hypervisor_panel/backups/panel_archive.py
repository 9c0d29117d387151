"""Panel self-backup: the store, settings, secrets, SSH keys and plugin data in one archive.

:func:`write_panel_archive` streams tar -> zstd -> (AES-256-GCM when a passphrase is
given) -> an :class:`~hypervisor_panel.backup.ArchiveWriter`, with no temporary copy; the
format is in ``panel_format.py`` and ``panel_crypto.py``, reading and restoring in
``panel_restore.py`` (re-exported here).

What goes in: every directory and regular file under the data directory (``panel.db`` and
its journal, ``demo-node.xml``, ``ssh/`` node keys and known hosts, ``guest-keys/``,
``secrets/`` (backup target credentials), plugin files, anything a later version adds),
with its mode. What stays out:

* ``os-templates/``: the download cache and import work files (re-downloadable, often
  gigabytes; imported templates live in storage volumes, not in the data directory);
* temporary and partial files anywhere: ``*.tmp``, ``*.part``, ``.partial-*``;
* what is not a directory or a regular file (symlinks, sockets, FIFOs), listed as skipped.

Consistency: the store's journal and snapshot are read together under ``store.locked()``
(every store write holds that lock, so the pair is a state that existed), before the other
files: a record in the archive never names a key file written after it. The journal is read
first, so even a writer in another process is safe: a compaction in between gives a newer
snapshot whose sequence number covers every journal line read, and a line being appended
is a torn tail the store ignores. Other files are read whole and re-read when they changed
meanwhile (larger ones, over 16 MiB, are streamed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from .. import __version__
from ..backup import PARTIAL_PREFIX, ArchiveWriter
from ..store import Store
from .panel_crypto import EncryptingSink, new_encryption
from .panel_format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ArchiveDamaged,
    DataDirNotEmpty,
    PanelBackupError,
    PassphraseRequired,
    WrongPassphrase,
    encode_header,
)
from .panel_restore import read_panel_manifest, restore_panel_archive

__all__ = ["ArchiveDamaged", "DataDirNotEmpty", "PanelBackupError", "PassphraseRequired",
           "WrongPassphrase", "is_excluded", "read_panel_manifest", "restore_panel_archive",
           "write_panel_archive"]

#: Top-level folders of the data directory never backed up (caches, work files).
EXCLUDED_DIRS = frozenset({"os-templates"})
TEMP_SUFFIXES = (".tmp", ".part", ".partial")
WHOLE_FILE_LIMIT = 16 << 20  # files up to this size are read whole (and re-read if changed)
BATCH = 1 << 20
ZSTD_LEVEL = 6
Progress = Callable[[int, int], None]  # (bytes of files done, bytes of files in all)


def is_excluded(rel: str) -> bool:
    """Whether the data-directory path ``rel`` ("a/b") is left out of panel backups."""
    parts = rel.split("/")
    name = parts[-1]
    return parts[0] in EXCLUDED_DIRS or name.startswith(PARTIAL_PREFIX) or \
        name.endswith(TEMP_SUFFIXES)


class _Output:
    """Batches, counts and hashes the archive bytes on their way to the ArchiveWriter."""

    def __init__(self, writer: ArchiveWriter) -> None:
        self.writer, self.size, self.sha256 = writer, 0, hashlib.sha256()
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= BATCH:
            self.drain()
        return len(data)

    def flush(self) -> None:
        """Kept for the compressor; bytes go out in batches (see :meth:`drain`)."""

    def drain(self) -> None:
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self.writer.write(data)
            self.size += len(data)
            self.sha256.update(data)


class _HashingReader:
    """Reads a file for tarfile, hashing what passes."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.sha256 = fh, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.sha256.update(data)
        return data


def _store_files(data_dir: Path, store: Store) -> tuple[str, list[tuple[str, bytes, Any]]]:
    """(the store's path in the archive, its snapshot and journal read under the lock)."""
    try:
        rel = store.path.relative_to(data_dir).as_posix()
    except ValueError:
        rel = store.path.name
    journal = store.path.with_name(store.path.name + ".journal")
    out = []
    with store.locked():  # journal first: even a writer not holding this lock is safe
        for path, name in ((journal, rel + ".journal"), (store.path, rel)):
            if path.exists():
                out.append((name, path.read_bytes(), path.stat()))
    return rel, out


def _walk(data_dir: Path, skip: set[str],
          skipped: list[str]) -> Iterator[tuple[str, Path, bool]]:
    """(relative path, path, is a folder) of what to back up, folders before their files."""
    for top, dirs, files in os.walk(data_dir):
        base = Path(top)
        rel_top = base.relative_to(data_dir).as_posix()
        prefix = "" if rel_top == "." else rel_top + "/"
        dirs.sort()
        for name in list(dirs):
            rel = prefix + name
            if is_excluded(rel) or os.path.islink(base / name):
                dirs.remove(name)
                if not is_excluded(rel):
                    skipped.append(rel)
                continue
            yield rel, base / name, True
        for name in sorted(files):
            rel = prefix + name
            if rel in skip or is_excluded(rel):
                continue
            try:
                regular = stat.S_ISREG(os.lstat(base / name).st_mode)
            except FileNotFoundError:
                continue
            if regular:
                yield rel, base / name, False
            else:
                skipped.append(rel)


def _read_stable(path: Path) -> tuple[bytes, os.stat_result] | None:
    """The whole file, read again when it changed while being read; None once it is gone."""
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as fh:
            before = os.fstat(fd)
            data = fh.read()
            after = os.fstat(fd)
        same = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
        if same and len(data) == after.st_size:
            return data, after
        time.sleep(0.05)
    raise PanelBackupError(f"{path} kept changing while it was backed up; try again")


def _tarinfo(rel: str, size: int, mode: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.size, info.mode, info.mtime = size, stat.S_IMODE(mode), int(mtime)
    return info


class _Packer:
    """Adds members to the tar stream and records them for the manifest."""

    def __init__(self, tar: tarfile.TarFile, total: int, progress: Progress | None) -> None:
        self.tar, self.total, self.progress = tar, total, progress
        self.files: list[dict[str, Any]] = []
        self.dirs: list[dict[str, Any]] = []
        self.done = 0

    def add_dir(self, rel: str, path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return  # removed since the walk (a deleted VM's keys, ...)
        info = _tarinfo(rel, 0, st.st_mode, st.st_mtime)
        info.type = tarfile.DIRTYPE
        self.tar.addfile(info)
        self.dirs.append({"path": rel, "mode": stat.S_IMODE(st.st_mode)})

    def add_bytes(self, rel: str, data: bytes, mode: int, mtime: float) -> None:
        self.tar.addfile(_tarinfo(rel, len(data), mode, mtime), io.BytesIO(data))
        self._record(rel, len(data), stat.S_IMODE(mode), hashlib.sha256(data).hexdigest())

    def add_file(self, rel: str, path: Path) -> None:
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            return  # removed since the walk: it is not part of the state
        if size <= WHOLE_FILE_LIMIT:
            read = _read_stable(path)
            if read is not None:
                self.add_bytes(rel, read[0], read[1].st_mode, read[1].st_mtime)
            return
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            reader = _HashingReader(fh)
            self.tar.addfile(_tarinfo(rel, st.st_size, st.st_mode, st.st_mtime), reader)
            self._record(rel, st.st_size, stat.S_IMODE(st.st_mode), reader.sha256.hexdigest())

    def _record(self, rel: str, size: int, mode: int, digest: str) -> None:
        self.files.append({"path": rel, "size": size, "mode": mode, "sha256": digest})
        self.done += size
        if self.progress is not None:
            self.progress(self.done, max(self.total, self.done))


def _manifest(header: dict[str, Any], data_dir: Path, packer: _Packer,
              store_rel: str, skipped: list[str]) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "created": header["created"],
        "panel_version": __version__, "encrypted": header["encrypted"],
        "source_data_dir": str(data_dir), "root_mode": stat.S_IMODE(os.stat(data_dir).st_mode),
        "store": store_rel, "dirs": packer.dirs, "files": packer.files,
        "skipped": skipped,
        "excluded": [f"{d}/" for d in sorted(EXCLUDED_DIRS)] +
                    [f"*{s}" for s in TEMP_SUFFIXES] + [f"{PARTIAL_PREFIX}*"],
    }


def _pack(tar: tarfile.TarFile, header: dict[str, Any], data_dir: Path, store: Store,
          progress: Progress | None) -> dict[str, Any]:
    """Write every member, then the manifest, to ``tar``; returns the manifest."""
    store_rel, stored = _store_files(data_dir, store)  # first: see the module docstring
    skipped: list[str] = []
    entries = list(_walk(data_dir, {rel for rel, _, _ in stored}, skipped))
    total = sum(len(data) for _, data, _ in stored) + sum(
        _size(path) for _, path, is_dir in entries if not is_dir)
    packer = _Packer(tar, total, progress)
    for rel, path, is_dir in entries:
        if is_dir:
            packer.add_dir(rel, path)
    for rel, data, st in stored:
        packer.add_bytes(rel, data, st.st_mode, st.st_mtime)
    for rel, path, is_dir in entries:
        if not is_dir:
            packer.add_file(rel, path)
    manifest = _manifest(header, data_dir, packer, store_rel, skipped)
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    tar.addfile(_tarinfo(MANIFEST_NAME, len(body), 0o600, time.time()), io.BytesIO(body))
    return manifest


def _size(path: Path) -> int:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def write_panel_archive(data_dir: str | Path, store: Store, writer: ArchiveWriter,
                        passphrase: str | None = None,
                        progress: Progress | None = None) -> dict[str, Any]:
    """Back the panel up into ``writer`` (published when complete); returns the manifest.

    Safe while the panel runs. ``passphrase`` (non-empty) encrypts the archive;
    ``progress(done, total)`` hears bytes of files read. The answer is the archive's
    manifest plus ``archive`` (``size``, ``sha256``, the published ``name``). On error
    nothing is published: the exception propagates and the caller's ``with`` aborts.
    """
    data_dir = Path(data_dir)
    header: dict[str, Any] = {
        "format": FORMAT, "version": FORMAT_VERSION, "panel_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "encrypted": passphrase is not None, "compression": "zstd"}
    key = b""
    if passphrase is not None:
        header["encryption"], key = new_encryption(passphrase)
    out = _Output(writer)
    encoded, raw_header = encode_header(header)
    out.write(encoded)
    sink: Any = EncryptingSink(out.write, key, raw_header) if key else out
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    with compressor.stream_writer(sink, closefd=False) as zsink, \
            tarfile.open(fileobj=zsink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        manifest = _pack(tar, header, data_dir, store, progress)
    if key:
        sink.close()
    out.drain()
    entry = writer.publish(out.size)
    manifest["archive"] = {"size": out.size, "sha256": out.sha256.hexdigest(),
                           "name": getattr(entry, "name", None)}
    return manifest

