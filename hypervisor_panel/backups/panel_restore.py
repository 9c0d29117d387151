"""Reading and restoring panel backups: everything is verified before anything is replaced.

:func:`restore_panel_archive` unpacks into a fresh folder next to the data directory
(``.NAME.restore-*``, mode 0700), checks every file against the manifest (presence, size,
SHA-256; for an encrypted archive every chunk is authenticated too), loads the store and
compacts it (paths under the backed-up data directory are rewritten to the new one, so a
demo node or a node's key file follow the move), fsyncs, and only then swaps it in:

* no data directory, or an empty one: one ``rename``;
* a non-empty one: refused (:class:`DataDirNotEmpty`) unless ``force``; with ``force`` the
  two are exchanged atomically (``renameat2(RENAME_EXCHANGE)``; two renames with rollback
  where the kernel lacks it) and the old one is kept as ``NAME.old-YYYYmmdd-HHMMSS``.

On any error the temporary folder is removed and the data directory was never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
import tarfile
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import zstandard

from ..store import CorruptStore, JournaledStorage
from .panel_crypto import DecryptingReader, open_key
from .panel_format import (
    MANIFEST_NAME,
    READ_SIZE,
    ArchiveDamaged,
    DataDirNotEmpty,
    PanelBackupError,
    PassphraseRequired,
    as_stream,
    read_header,
)

Source = Iterable[bytes] | BinaryIO


def _open_body(source: Source, passphrase: str | None) -> tuple[dict[str, Any], Any]:
    """(header, plaintext body stream): checks the passphrase before any body byte is read."""
    stream = as_stream(source)
    header, raw = read_header(stream)
    if not header.get("encrypted"):
        return header, stream
    if not passphrase:
        raise PassphraseRequired("the archive is encrypted: give its passphrase")
    return header, DecryptingReader(stream, open_key(passphrase, header.get("encryption")),
                                    raw)


def _public_header(header: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in header.items() if k != "encryption"}


def _safe_rel(name: str) -> str:
    path = PurePosixPath(name)
    if not name or "\0" in name or path.is_absolute() or \
            any(part in ("", ".", "..") for part in name.split("/")):
        raise ArchiveDamaged(f"the archive holds an unsafe path {name!r}")
    return path.as_posix()


class _Unpacker:
    """Reads the tar stream; writes files under ``dest`` (or only hashes them when None)."""

    def __init__(self, dest: Path | None) -> None:
        self.dest = dest
        self.files: dict[str, tuple[int, str]] = {}
        self.dirs: set[str] = set()
        self.manifest: dict[str, Any] | None = None

    def run(self, body: Any) -> dict[str, Any]:
        reader = zstandard.ZstdDecompressor().stream_reader(body, read_size=READ_SIZE,
                                                            closefd=False)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    self._member(tar, member)
            while reader.read(READ_SIZE):
                pass  # tar padding up to the end of the compressed frame
            if body.read(1):
                raise ArchiveDamaged("the archive has data after its end")
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
            raise ArchiveDamaged(f"the archive is damaged or truncated ({exc})") from None
        if self.manifest is None:
            raise ArchiveDamaged("the archive is truncated: it has no manifest")
        return self._check()

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if self.manifest is not None:
            raise ArchiveDamaged("the archive has members after its manifest")
        rel = _safe_rel(member.name)
        if rel in self.files or rel in self.dirs:
            raise ArchiveDamaged(f"the archive holds {rel!r} twice")
        if rel == MANIFEST_NAME and member.isreg():
            try:
                self.manifest = json.loads(tar.extractfile(member).read())  # type: ignore
            except ValueError:
                raise ArchiveDamaged("the archive's manifest is not valid JSON") from None
        elif member.isdir():
            self.dirs.add(rel)
            if self.dest is not None:
                os.makedirs(self.dest / rel, 0o700, exist_ok=True)
        elif member.isreg():
            self.files[rel] = self._copy(tar.extractfile(member), rel)  # type: ignore
        else:
            raise ArchiveDamaged(f"the archive holds {rel!r}, neither a file nor a folder")

    def _copy(self, src: BinaryIO, rel: str) -> tuple[int, str]:
        digest, size = hashlib.sha256(), 0
        out = None
        if self.dest is not None:
            target = self.dest / rel
            os.makedirs(target.parent, 0o700, exist_ok=True)
            out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            while data := src.read(READ_SIZE):
                digest.update(data)
                size += len(data)
                if out is not None:
                    _write_all(out, data)
            if out is not None:
                os.fsync(out)
        finally:
            if out is not None:
                os.close(out)
        return size, digest.hexdigest()

    def _check(self) -> dict[str, Any]:
        manifest = self.manifest
        try:
            listed = {f["path"]: (int(f["size"]), str(f["sha256"])) for f in manifest["files"]}
            dirs = {d["path"] for d in manifest["dirs"]}
        except (KeyError, TypeError, ValueError):
            raise ArchiveDamaged("the archive's manifest is malformed") from None
        if set(listed) != set(self.files) or not dirs <= self.dirs:
            missing = sorted(set(listed) - set(self.files)) + sorted(dirs - self.dirs)
            extra = sorted(set(self.files) - set(listed))
            raise ArchiveDamaged(f"the archive does not match its manifest (missing: "
                                 f"{missing[:5]}, not listed: {extra[:5]})")
        bad = sorted(rel for rel, seen in self.files.items() if listed[rel] != seen)
        if bad:
            raise ArchiveDamaged(f"checksum mismatch in the archive: {', '.join(bad[:5])}")
        return manifest  # type: ignore[return-value]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_panel_manifest(stream: Source, passphrase: str | None = None) -> dict[str, Any]:
    """The manifest of a panel archive (a file object or an iterable of chunks).

    With the passphrase (or for an unencrypted archive) the whole archive is read and every
    hash and chunk checked (``verified: True``); an encrypted archive without a passphrase
    gives only its plain header (format, created, panel version, ``encrypted``).
    """
    source = as_stream(stream)
    if passphrase is None:
        header, _ = read_header(source)
        if header.get("encrypted"):
            return {**_public_header(header), "verified": False}
        return {**_Unpacker(None).run(source), "verified": True}
    _, body = _open_body(source, passphrase)
    return {**_Unpacker(None).run(body), "verified": True}


def _relocate(value: Any, pairs: list[tuple[str, str]]) -> Any:
    """``value`` with paths under an old data directory moved under the new one."""
    if isinstance(value, str):
        for old, new in pairs:
            value = new if value == old else value.replace(old + "/", new + "/")
        return value
    if isinstance(value, dict):
        return {k: _relocate(v, pairs) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocate(v, pairs) for v in value]
    return value


def _relocations(manifest: dict[str, Any], target: Path) -> list[tuple[str, str]]:
    source = manifest.get("source_data_dir")
    if not isinstance(source, str) or not source:
        return []
    new = str(target.absolute())
    pairs = []
    for old in dict.fromkeys((source, os.path.abspath(source))):
        for quote in (lambda s: s, lambda s: urllib.parse.quote(s, safe="/")):
            if quote(old) != quote(new):
                pairs.append((quote(old), quote(new)))
    return list(dict.fromkeys(pairs))


def _fix_store(tmp: Path, manifest: dict[str, Any], target: Path) -> None:
    """Load the restored store (proof that it is whole), relocate paths, compact it."""
    rel = manifest.get("store")
    listed = {entry["path"] for entry in manifest["files"]}
    if not isinstance(rel, str) or not {rel, rel + ".journal"} & listed:
        raise ArchiveDamaged("the archive holds no panel store")
    try:
        storage = JournaledStorage(str(tmp / _safe_rel(rel)), compact_every=1 << 30)
    except (CorruptStore, ValueError, KeyError, TypeError) as exc:
        raise ArchiveDamaged(f"the archived store does not load: {exc}") from None
    try:
        pairs = _relocations(manifest, target)
        if pairs:
            tables = storage.read()
            storage.write({name: {doc_id: _relocate(doc, pairs) for doc_id, doc in
                                  table.items()} for name, table in tables.items()})
        storage.compact()
    finally:
        storage.close()
    os.chmod(tmp / rel, 0o600)  # a new snapshot; the archived mode, if any, comes later


def _apply_modes(tmp: Path, manifest: dict[str, Any]) -> None:
    """File and folder modes as backed up (permission bits only), then fsync the folders."""
    for entry in manifest["files"]:
        os.chmod(tmp / entry["path"], int(entry.get("mode", 0o600)) & 0o777)
    dirs = sorted((d["path"] for d in manifest["dirs"]), key=lambda p: -p.count("/"))
    modes = {d["path"]: int(d.get("mode", 0o700)) & 0o777 for d in manifest["dirs"]}
    for rel in ["", *dirs]:
        _fsync(tmp / rel)
    for rel in dirs:
        os.chmod(tmp / rel, modes[rel])
    os.chmod(tmp, int(manifest.get("root_mode", 0o700)) & 0o777)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _occupied(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds something (a non-directory there counts too)."""
    if not os.path.lexists(data_dir):
        return False
    if data_dir.is_symlink() or not data_dir.is_dir():
        return True
    return any(os.scandir(data_dir))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False when the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap(tmp: Path, data_dir: Path, force: bool) -> Path | None:
    """Put ``tmp`` in place of ``data_dir``; returns where the old contents went (or None)."""
    if not _occupied(data_dir):
        os.replace(tmp, data_dir)  # atomic; an empty folder is replaced
        return None
    if not force:
        raise DataDirNotEmpty(f"{data_dir} is not empty: restore with force to replace it "
                              "(the old one is kept)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    old = data_dir.with_name(f"{data_dir.name}.old-{stamp}")
    n = 1
    while os.path.lexists(old):
        old, n = data_dir.with_name(f"{data_dir.name}.old-{stamp}-{n}"), n + 1
    if _exchange(tmp, data_dir):
        os.rename(tmp, old)
        return old
    os.rename(data_dir, old)
    try:
        os.rename(tmp, data_dir)
    except OSError:
        os.rename(old, data_dir)
        raise
    return old


def restore_panel_archive(chunks: Source, data_dir: str | Path,
                          passphrase: str | None = None, *,
                          force: bool = False) -> dict[str, Any]:
    """Verify the archive whole, then swap it in as ``data_dir``; returns the manifest.

    ``chunks`` is an iterable of bytes (``BackupTarget.open_read``) or a file object. The
    answer adds ``restored_to`` and ``previous`` (the kept old directory, or None). The
    panel must not be running on ``data_dir``.
    """
    data_dir = Path(data_dir).absolute()
    if _occupied(data_dir) and not force:
        raise DataDirNotEmpty(f"{data_dir} is not empty: restore with force to replace it "
                              "(the old one is kept)")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = data_dir.with_name(f".{data_dir.name}.restore-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(tmp, 0o700)
    try:
        _, body = _open_body(chunks, passphrase)
        manifest = _Unpacker(tmp).run(body)
        _fix_store(tmp, manifest, data_dir)
        _apply_modes(tmp, manifest)
        previous = _swap(tmp, data_dir, force)
        _fsync(data_dir.parent)
    except OSError as exc:
        _discard(tmp)
        raise PanelBackupError(f"could not restore into {data_dir}: {exc}") from exc
    except BaseException:
        _discard(tmp)
        raise
    return {**manifest, "restored_to": str(data_dir),
            "previous": str(previous) if previous else None}


def _discard(tmp: Path) -> None:
    """Remove the temporary folder (restoring owner access: a 0500 folder resists rmtree)."""
    if not tmp.exists():
        return
    with contextlib.suppress(OSError):
        os.chmod(tmp, 0o700)
        for top, dirs, _ in os.walk(tmp):
            for name in dirs:
                path = Path(top) / name
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | 0o700)
        shutil.rmtree(tmp)
