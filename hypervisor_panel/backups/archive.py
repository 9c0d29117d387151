"""The VM backup archive: one self-describing, streamable file per backup.

Layout (integers big-endian)::

    MAGIC                          8 bytes  b"HVPVMBK1"
    per part (a disk, the domain XML, the VM record), in order:
      P  u32 n, JSON header (n bytes: index, kind, name, mode, virtual_size)
      D  u64 offset, u64 length, u32 n, a zstd frame of n bytes (length raw bytes)
      Z  u64 offset, u64 length                  (zeros or a hole: no data)
      E  u64 number of D and Z records
    manifest                       JSON (see :func:`build_manifest`)
    footer                         u64 manifest offset, u64 manifest length,
                                   32 bytes SHA-256 of the manifest, b"HVPVMEND"

Extents of a part are sorted and disjoint; a data extent holds at most ``CHUNK`` bytes. A
full part covers what was allocated (anything not listed reads as zeros); an incremental
part lists only what changed since its parent (anything not listed is the parent's).
Each part's manifest entry holds the SHA-256 of its stored bytes (P to E) and of its
logical data (for every data extent: offset, length and the raw bytes), so
:func:`verify_archive` detects any flipped, missing or reordered byte.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..backup import ArchiveWriter, BackupTarget
from .archive_format import (
    CHUNK,
    EXTENT,
    FLUSH_AT,
    FOOTER,
    FOOTER_MAGIC,
    FORMAT,
    FORMAT_VERSION,
    KINDS,
    MAGIC,
    MAX_FRAME,
    MAX_HEADER,
    QUEUE_DEPTH,
    TAIL_READ,
    U32,
    U64,
    WORKERS,
    ZERO_CHUNK,
    ZSTD_LEVEL,
    ArchiveDamaged,
    BackgroundHash,
    BackupCancelled,
    BackupError,
    ByteStream,
    CancelCheck,
    Extent,
    Progress,
    check_manifest,
    check_part,
    compress,
    decompress,
    extent_digest_header,
    is_zero,
    parse_footer,
    put_unless,
)

__all__ = ["CHUNK", "ZERO_CHUNK", "ArchiveBuilder", "ArchiveDamaged", "BackupCancelled",
           "BackupError", "ByteStream", "CancelCheck", "Extent", "Progress", "compress",
           "decompress", "extent_digest_header", "is_zero", "part_of", "read_blob",
           "read_manifest", "read_part", "verify_archive"]


class ArchiveBuilder:
    """Writes an archive to an :class:`ArchiveWriter`, part by part (no local copy)."""

    def __init__(self, writer: ArchiveWriter) -> None:
        if getattr(writer, "offset", 0):
            raise BackupError("a VM backup cannot resume a partial upload: open the "
                              "archive with resume=False")
        self.writer = writer
        self.position = 0
        self.parts: list[dict[str, Any]] = []
        self._buf = bytearray()
        self._part: dict[str, Any] | None = None
        self._hash: Any = None
        # The stored hash runs in one thread of its own (FIFO), beside the writes.
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="hvp-sha256")
        self._hashing: deque[Future] = deque()
        self._emit(MAGIC)

    def _emit(self, data: bytes) -> None:
        self.position += len(data)
        if len(data) >= FLUSH_AT:
            self.flush()
            self._write(data)
            return
        self._buf += data
        if len(self._buf) >= FLUSH_AT:
            self.flush()

    def _write(self, data: bytes) -> None:
        if self._hash is not None:
            self._hashing.append(self._hasher.submit(self._hash.update, data))
            while len(self._hashing) > QUEUE_DEPTH:
                self._hashing.popleft().result()
        self.writer.write(data)

    def flush(self) -> None:
        """Hand buffered small records to the writer."""
        if self._buf:
            self._write(bytes(self._buf))
            self._buf.clear()

    def _stored_digest(self) -> str:
        """The finished stored hash of the current part (waits for the hashing thread)."""
        self.flush()
        digest = self._hasher.submit(self._hash.hexdigest).result()
        self._hashing.clear()
        return digest

    def begin_part(self, kind: str, name: str, virtual_size: int, mode: str = "full",
                   **meta: Any) -> None:
        """Start a part; ``meta`` (target dev, format, ...) goes into its manifest entry."""
        if self._part is not None or kind not in KINDS or mode not in ("full", "incremental"):
            raise BackupError(f"cannot start part {name!r} ({kind}, {mode})")
        header = {"index": len(self.parts), "kind": kind, "name": name, "mode": mode,
                  "virtual_size": int(virtual_size)}
        self._part = {**meta, **header, "stored_offset": self.position, "data_bytes": 0,
                      "zero_bytes": 0, "data_extents": 0, "zero_extents": 0,
                      "last_end": 0}
        self.flush()
        self._hash = hashlib.sha256()
        encoded = json.dumps(header, sort_keys=True).encode()
        self._emit(b"P" + U32.pack(len(encoded)) + encoded)

    def _check_extent(self, offset: int, length: int) -> dict[str, Any]:
        part = self._part
        if part is None or length <= 0 or offset < part["last_end"] or \
                offset + length > part["virtual_size"]:
            raise BackupError(f"extent {offset}+{length} is out of order or out of range")
        part["last_end"] = offset + length
        return part

    def add_data(self, offset: int, length: int, frame: bytes) -> None:
        """A data extent: ``frame`` is the zstd frame of its ``length`` raw bytes."""
        if length > CHUNK:
            raise BackupError(f"a data extent of {length} bytes exceeds {CHUNK}")
        part = self._check_extent(offset, length)
        part["data_bytes"] += length
        part["data_extents"] += 1
        self._emit(b"D" + EXTENT.pack(offset, length) + U32.pack(len(frame)))
        self._emit(frame)

    def add_zero(self, offset: int, length: int) -> None:
        """A zero (or hole) extent."""
        part = self._check_extent(offset, length)
        part["zero_bytes"] += length
        part["zero_extents"] += 1
        self._emit(b"Z" + EXTENT.pack(offset, length))

    def end_part(self, data_sha256: str) -> dict[str, Any]:
        """Close the part with its logical hash; returns its manifest entry."""
        part = self._part
        if part is None:
            raise BackupError("no part to end")
        self._emit(b"E" + U64.pack(part["data_extents"] + part["zero_extents"]))
        part.pop("last_end")
        part["stored_length"] = self.position - part["stored_offset"]
        part["stored_sha256"] = self._stored_digest()
        part["data_sha256"] = data_sha256
        self._part, self._hash = None, None
        self.parts.append(part)
        return part

    def add_blob(self, kind: str, name: str, payload: bytes) -> dict[str, Any]:
        """A small part (domain XML, VM record) holding ``payload`` as one extent."""
        self.begin_part(kind, name, len(payload))
        digest = hashlib.sha256()
        if payload:
            digest.update(extent_digest_header(0, len(payload)) + payload)
            self.add_data(0, len(payload), compress(payload))
        return self.end_part(digest.hexdigest())

    def finish(self, manifest: dict[str, Any]) -> int:
        """Write the manifest (``manifest`` plus the parts) and the footer; the total size."""
        if self._part is not None:
            raise BackupError("a part is still open")
        body = {**manifest, "format": FORMAT, "version": FORMAT_VERSION,
                "chunk_size": CHUNK, "compression": f"zstd-{ZSTD_LEVEL}", "parts": self.parts}
        encoded = json.dumps(body, sort_keys=True).encode()
        offset = self.position
        self._emit(encoded)
        self._emit(FOOTER.pack(offset, len(encoded), hashlib.sha256(encoded).digest(),
                               FOOTER_MAGIC))
        self.flush()
        self.close()
        return self.position

    def close(self) -> None:
        """Stop the hashing thread (also after a failure)."""
        self._hasher.shutdown(wait=True, cancel_futures=True)


def _header(stream: ByteStream, part: dict[str, Any]) -> dict[str, Any]:
    if stream.read(1) != b"P":
        raise ArchiveDamaged(f"part {part.get('name')!r} does not start where the manifest "
                             "says")
    (size,) = U32.unpack(stream.read(4))
    if size > MAX_HEADER:
        raise ArchiveDamaged("a part header is too large")
    try:
        header = json.loads(stream.read(size))
    except ValueError as exc:
        raise ArchiveDamaged(f"a part header is not JSON: {exc}") from exc
    wanted = {k: part.get(k) for k in ("index", "kind", "name", "mode", "virtual_size")}
    if header != wanted:
        raise ArchiveDamaged(f"part {part.get('name')!r}: its header does not match the "
                             "manifest")
    return header


def _records(stream: ByteStream, part: dict[str, Any]) -> Iterator[Extent]:
    """A part's extents in stored order; its stored hash and counts are checked at the end."""
    stream.hash = hashlib.sha256()
    size, end, count = int(part["virtual_size"]), 0, 0
    _header(stream, part)
    while True:
        tag = stream.read(1)
        if tag == b"E":
            break
        if tag not in (b"D", b"Z"):
            raise ArchiveDamaged(f"part {part['name']!r}: unknown record at byte "
                                 f"{stream.offset - 1}")
        offset, length = EXTENT.unpack(stream.read(16))
        if offset < end or length <= 0 or offset + length > size or \
                (tag == b"D" and length > CHUNK):
            raise ArchiveDamaged(f"part {part['name']!r}: bad extent {offset}+{length}")
        end, count = offset + length, count + 1
        frame = None
        if tag == b"D":
            (stored,) = U32.unpack(stream.read(4))
            if stored > MAX_FRAME:
                raise ArchiveDamaged(f"part {part['name']!r}: a frame is too large")
            frame = stream.read(stored)
        yield Extent(offset, length, frame)
    (recorded,) = U64.unpack(stream.read(8))
    check_part(part, stream.hash.hexdigest(), None, recorded, count)
    stream.hash = None


def _reader(stream: ByteStream, part: dict[str, Any], pool: ThreadPoolExecutor,
            items: queue.Queue, stop: threading.Event) -> None:
    """Thread body: parse records, start their decompression, queue them in order."""
    try:
        for extent in _records(stream, part):
            job = pool.submit(extent.data) if extent.frame is not None else None
            if not put_unless(items, (extent, job), stop):
                return
        put_unless(items, None, stop)
    except BaseException as exc:  # raised again by the consumer
        put_unless(items, exc, stop)


def read_part(stream: ByteStream, part: dict[str, Any],
              verify: bool = True) -> Iterator[Extent]:
    """Yield a part's extents from ``stream`` (at the part's start), then check its hashes.

    Records are parsed in a thread and decompressed in a small pool ahead of the consumer.
    With ``verify`` the logical hash is checked too; the stored bytes' hash always is.
    The checks run after the last extent is yielded: a consumer treats the part as good
    only once the generator is exhausted.
    """
    logical = BackgroundHash() if verify else None
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="hvp-unzstd")
    items: queue.Queue = queue.Queue(QUEUE_DEPTH)
    stop = threading.Event()
    thread = threading.Thread(target=_reader, args=(stream, part, pool, items, stop),
                              daemon=True, name="hvp-archive-reader")
    thread.start()
    try:
        while (item := items.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            extent, job = item
            if job is not None:
                data = job.result()
                if logical is not None:
                    logical.update(extent_digest_header(extent.offset, extent.length))
                    logical.update(data)
            yield extent
        if logical is not None:
            _check_logical(part, logical.hexdigest())
    finally:
        if logical is not None:
            logical.close()
        stop.set()
        thread.join(timeout=30)
        pool.shutdown(wait=True, cancel_futures=True)


def _check_logical(part: dict[str, Any], logical: str) -> None:
    """ArchiveDamaged unless ``logical`` is the part's recorded data hash."""
    if logical != part["data_sha256"]:
        raise ArchiveDamaged(f"part {part['name']!r}: the SHA-256 of its data does not match "
                             "the manifest (the archive was modified or damaged)")


def read_manifest(target: BackupTarget, name: str, size: int | None = None) -> dict[str, Any]:
    """The manifest of archive ``name`` (one ranged read of its tail; two for big ones)."""
    if size is None:
        entry = target.stat(name)
        if entry is None:
            raise BackupError(f"there is no archive {name!r} on the target",
                              code="archive_not_found")
        size = entry.size
    start = max(0, size - TAIL_READ)
    tail = b"".join(target.open_read(name, start, size - start))
    if len(tail) != size - start:
        raise ArchiveDamaged(f"archive {name!r} is shorter than the target says")
    offset, length, digest = parse_footer(tail, size)
    if offset < start:
        tail = b"".join(target.open_read(name, offset, size - offset))
        start = offset
    encoded = tail[offset - start:offset - start + length]
    if hashlib.sha256(encoded).digest() != digest:
        raise ArchiveDamaged(f"archive {name!r}: the manifest does not match its SHA-256")
    try:
        manifest = json.loads(encoded)
    except ValueError as exc:
        raise ArchiveDamaged(f"archive {name!r}: the manifest is not JSON") from exc
    check_manifest(manifest, name, offset)
    manifest["archive_size"], manifest["manifest_offset"] = size, offset
    return manifest


def verify_archive(target: BackupTarget, name: str, progress: Progress | None = None,
                   cancelled: CancelCheck | None = None) -> dict[str, Any]:
    """Re-read archive ``name`` and check every hash; its manifest, or ArchiveDamaged."""
    manifest = read_manifest(target, name)
    end = manifest["manifest_offset"]
    stream = ByteStream(target.open_read(name, 0, end))
    try:
        if stream.read(len(MAGIC)) != MAGIC:
            raise ArchiveDamaged(f"archive {name!r} does not start with the VM backup magic")
        for part in manifest["parts"]:
            for _extent in read_part(stream, part, verify=True):
                if cancelled is not None and cancelled():
                    raise BackupCancelled("verification cancelled")
                if progress is not None:
                    progress(stream.offset, end)
        if stream.offset != end:
            raise ArchiveDamaged(f"archive {name!r}: bytes after the last part")
    finally:
        stream.close()
    return manifest


def part_of(manifest: dict[str, Any], kind: str, name: str | None = None) -> dict | None:
    """The first part of ``kind`` (named ``name`` when given), or None."""
    for part in manifest["parts"]:
        if part["kind"] == kind and (name is None or part["name"] == name):
            return part
    return None


def read_blob(target: BackupTarget, archive: str, part: dict[str, Any]) -> bytes:
    """The payload of a small part (domain XML, VM record), checked against its hashes."""
    stream = ByteStream(target.open_read(archive, part["stored_offset"],
                                         part["stored_length"]), part["stored_offset"])
    out = bytearray(int(part["virtual_size"]))
    try:
        for extent in read_part(stream, part, verify=True):
            data = extent.data()
            if data is not None:
                out[extent.offset:extent.end] = data
    finally:
        stream.close()
    return bytes(out)
