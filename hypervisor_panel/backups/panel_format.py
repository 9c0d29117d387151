"""The panel backup archive format: errors, the plain header, byte-stream adapters.

An archive is::

    MAGIC                      b"HVP-PANEL-BACKUP\\n"
    header length              4 bytes, big-endian
    header                     JSON (format, version, created, panel version, encrypted,
                               compression, and the encryption parameters when encrypted)
    body                       a zstd-compressed tar stream; when encrypted, that stream cut
                               in chunks sealed with AES-256-GCM (see panel_crypto.py)

The tar stream holds the data directory's directories and regular files, then, as its last
member, ``MANIFEST.json`` (every file with its size, mode and SHA-256).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from ..errors import Conflict, PanelError

MAGIC = b"HVP-PANEL-BACKUP\n"
FORMAT = "hvp-panel-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "MANIFEST.json"
MAX_HEADER = 64 * 1024
READ_SIZE = 1 << 20


class PanelBackupError(PanelError):
    """A panel backup or restore failed (the message says what and why)."""

    status, code = 422, "panel_backup_error"


class ArchiveDamaged(PanelBackupError):
    """The archive is not a panel backup, or it was truncated, reordered or tampered with."""

    code = "archive_damaged"


class WrongPassphrase(PanelBackupError):
    """The passphrase does not open this encrypted archive."""

    code = "wrong_passphrase"


class PassphraseRequired(PanelBackupError):
    """The archive is encrypted and no passphrase was given."""

    code = "passphrase_required"


class DataDirNotEmpty(Conflict):
    """A restore would replace a data directory that holds something (use force)."""

    code = "data_dir_not_empty"


class ChunkReader(io.RawIOBase):
    """A readable binary stream over an iterable of ``bytes`` chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self._pos >= len(self._buf):
            try:
                self._buf, self._pos = bytes(next(self._chunks)), 0
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n


def as_stream(source: Iterable[bytes] | BinaryIO) -> BinaryIO:
    """``source`` as a buffered binary stream (a file object is used as it is)."""
    if hasattr(source, "read"):
        return source  # type: ignore[return-value]
    return io.BufferedReader(ChunkReader(source), READ_SIZE)  # type: ignore[arg-type]


def read_exact(stream: BinaryIO, size: int, what: str) -> bytes:
    """Exactly ``size`` bytes of ``stream``, else :class:`ArchiveDamaged` (truncated)."""
    parts, left = [], size
    while left:
        data = stream.read(left)
        if not data:
            raise ArchiveDamaged(f"the archive is truncated (in the {what})")
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def encode_header(header: dict[str, Any]) -> tuple[bytes, bytes]:
    """(the archive's first bytes: magic, length, header JSON; the header JSON alone)."""
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + struct.pack(">I", len(raw)) + raw, raw


def read_header(stream: BinaryIO) -> tuple[dict[str, Any], bytes]:
    """(header, its raw JSON bytes) from the start of ``stream``; checks magic and version."""
    try:
        magic = read_exact(stream, len(MAGIC), "magic")
    except ArchiveDamaged:
        raise ArchiveDamaged("not a panel backup archive (too short)") from None
    if magic != MAGIC:
        raise ArchiveDamaged("not a panel backup archive (bad magic)")
    (length,) = struct.unpack(">I", read_exact(stream, 4, "header"))
    if length > MAX_HEADER:
        raise ArchiveDamaged(f"the archive header is too large ({length} bytes)")
    raw = read_exact(stream, length, "header")
    try:
        header = json.loads(raw)
    except ValueError:
        raise ArchiveDamaged("the archive header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArchiveDamaged("not a panel backup archive (unknown format)")
    if header.get("version") != FORMAT_VERSION:
        raise ArchiveDamaged(f"panel backup format version {header.get('version')!r} is not "
                             f"supported (this panel reads version {FORMAT_VERSION})")
    return header, raw
