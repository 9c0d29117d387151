"""Reading one disk of a pull-mode backup job over NBD (libnbd): extent maps and data.

QEMU's NBD export of a backup job answers two metadata contexts: ``base:allocation``
(holes and zero areas, which are never read) and, for incremental jobs,
``qemu:dirty-bitmap:backup-<dev>`` (the areas written since the parent checkpoint).
:func:`plan_disk` turns them into the list of extents to store; :func:`stream_disk` reads,
compresses and writes them through a small pipeline (NBD reads in one thread, zstd in a
pool, the target's writes in the caller's thread).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .archive import (
    CHUNK,
    QUEUE_DEPTH,
    WORKERS,
    ArchiveBuilder,
    BackupCancelled,
    BackupError,
    CancelCheck,
    compress,
    extent_digest_header,
    put_unless,
)

BASE_ALLOCATION = "base:allocation"
STATE_ZERO = 2  # NBD_STATE_ZERO: reads as zeros
DIRTY = 1  # a set bit in a qemu:dirty-bitmap context
MAX_STATUS = (1 << 32) - (1 << 20)  # bytes per block_status call (the protocol: < 4 GiB)
READ_DEPTH = 4  # NBD reads in flight (QEMU serves them in parallel: ~2.5x one at a time)


def bitmap_context(dev: str) -> str:
    """The NBD metadata context of the dirty bitmap libvirt exports for disk ``dev``."""
    return f"qemu:dirty-bitmap:backup-{dev}"


def connect(host: str, port: int, export: str, bitmap: str | None = None,
            socket: str | None = None) -> Any:
    """A libnbd handle on ``export`` with the allocation (and ``bitmap``) contexts, over
    TCP at ``host:port`` or over the unix ``socket``."""
    try:
        import nbd
    except ImportError as exc:  # a venv without the system's site-packages
        raise BackupError("VM backups need libnbd's Python binding (Debian: python3-libnbd; "
                          "the panel's venv must see the system site-packages)",
                          code="libnbd_missing") from exc

    handle = nbd.NBD()
    handle.add_meta_context(BASE_ALLOCATION)
    if bitmap:
        handle.add_meta_context(bitmap)
    handle.set_export_name(export)
    try:
        if socket is not None:
            handle.connect_unix(socket)
        else:
            handle.connect_tcp(host, str(port))
    except nbd.Error as exc:
        where = socket if socket is not None else f"{host}:{port}"
        raise BackupError(f"cannot read disk {export} over NBD at {where}: "
                          f"{exc.string}") from exc
    for context in (BASE_ALLOCATION, bitmap):
        if context and not handle.can_meta_context(context):
            handle.shutdown()
            raise BackupError(f"the NBD export {export} does not offer {context}")
    return handle


def _context_maps(handle: Any, contexts: list[str], size: int
                  ) -> dict[str, list[tuple[int, int, int]]]:
    """``(start, end, flags)`` over the whole export for each metadata context, from one
    pass: every reply carries all negotiated contexts, so one walk serves them all (each
    round trip costs the most when the guest keeps QEMU's main loop busy)."""
    maps: dict[str, list[tuple[int, int, int]]] = {c: [] for c in contexts}
    offset = 0
    while offset < size:
        count = min(size - offset, MAX_STATUS)
        found: dict[str, list[int]] = {c: [] for c in contexts}

        def callback(name: str, start: int, entries: list[int], err: Any,
                     found: dict[str, list[int]] = found) -> int:
            if name in found:
                found[name].extend(entries)
            return 0

        handle.block_status(count, offset, callback)
        reached = offset + count
        for context, entries in found.items():
            if not entries:
                raise BackupError(f"the NBD server gave no {context} extents at {offset}")
            reached = min(reached, offset + sum(entries[::2]))
        for context, entries in found.items():
            position = offset
            for length, flags in zip(entries[::2], entries[1::2], strict=True):
                end = min(position + length, reached)
                if end > position:
                    maps[context].append((position, end, flags))
                position = end
        offset = reached
    return maps


@dataclass(frozen=True)
class Planned:
    """One extent to store: ``data`` False means zeros (nothing is read)."""

    offset: int
    length: int
    data: bool


def _intersect(allocation: list[tuple[int, int, int]],
               dirty: list[tuple[int, int, int]] | None) -> Iterator[tuple[int, int, bool]]:
    """``(start, end, is_data)`` of the dirty (or, without a bitmap, all) areas."""
    if dirty is None:
        for start, end, flags in allocation:
            yield start, end, not flags & STATE_ZERO
        return
    i = 0
    for d_start, d_end, d_flags in dirty:
        if not d_flags & DIRTY:
            continue
        while i < len(allocation) and allocation[i][1] <= d_start:
            i += 1
        j = i
        while j < len(allocation) and allocation[j][0] < d_end:
            a_start, a_end, flags = allocation[j]
            yield max(a_start, d_start), min(a_end, d_end), not flags & STATE_ZERO
            j += 1


def plan_disk(handle: Any, bitmap: str | None = None) -> list[Planned]:
    """The extents to store for the export: merged, data split at ``CHUNK`` boundaries."""
    size = handle.get_size()
    maps = _context_maps(handle, [BASE_ALLOCATION, *([bitmap] if bitmap else [])], size)
    allocation, dirty = maps[BASE_ALLOCATION], maps[bitmap] if bitmap else None
    merged: list[list[Any]] = []
    for start, end, is_data in _intersect(allocation, dirty):
        if merged and merged[-1][1] == start and merged[-1][2] == is_data:
            merged[-1][1] = end
        elif end > start:
            merged.append([start, end, is_data])
    plan = []
    for start, end, is_data in merged:
        if not is_data:
            plan.append(Planned(start, end - start, False))
            continue
        position = start
        while position < end:
            stop = min(end, (position // CHUNK + 1) * CHUNK)
            plan.append(Planned(position, stop - position, True))
            position = stop
    return plan


def planned_bytes(plan: list[Planned]) -> int:
    """How many bytes the plan reads."""
    return sum(p.length for p in plan if p.data)


_END = ("end",)


class _Producer(threading.Thread):
    """Reads the planned data extents and hands (tag, offset, length, future) on."""

    def __init__(self, handle: Any, plan: list[Planned], pool: ThreadPoolExecutor) -> None:
        super().__init__(daemon=True, name="hvp-nbd-reader")
        self.handle, self.plan, self.pool = handle, plan, pool
        self.items: queue.Queue[tuple] = queue.Queue(QUEUE_DEPTH)
        self.stop = threading.Event()
        self.digest = hashlib.sha256()

    def _put(self, item: tuple) -> bool:
        return put_unless(self.items, item, self.stop)

    def _item(self, p: Planned, buf: Any) -> tuple:
        """What the consumer gets for a planned extent (``buf``: its data, when read)."""
        if buf is None:
            return ("Z", p.offset, p.length, 0)
        if buf.is_zero():  # an all-zero chunk in allocated space: stored as a hole
            return ("Z", p.offset, p.length, p.length)
        raw = buf.to_bytearray()
        self.digest.update(extent_digest_header(p.offset, p.length))
        self.digest.update(raw)
        return ("D", p.offset, p.length, self.pool.submit(compress, raw))

    def _emit_head(self, pending: deque) -> bool:
        """Wait for the oldest request, hand it on in plan order; False when stopped."""
        p, cookie, buf = pending.popleft()
        if cookie is not None:
            while not self.handle.aio_command_completed(cookie):
                self.handle.poll(-1)
        return self._put(self._item(p, buf))

    def run(self) -> None:
        """Read the plan in order, READ_DEPTH requests in flight; errors go to the consumer."""
        import nbd

        pending: deque = deque()
        try:
            for p in self.plan:
                if p.data:
                    buf = nbd.Buffer(p.length)
                    pending.append((p, self.handle.aio_pread(buf, p.offset), buf))
                else:
                    pending.append((p, None, None))
                while pending and (pending[0][1] is None or
                                   sum(1 for x in pending if x[1] is not None) >= READ_DEPTH):
                    if not self._emit_head(pending):
                        return
            while pending:
                if not self._emit_head(pending):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(("error", exc))


def stream_disk(handle: Any, plan: list[Planned], builder: ArchiveBuilder,
                advance: Callable[[int], None], cancelled: CancelCheck | None = None) -> str:
    """Store the planned extents in the open part of ``builder``; the logical SHA-256.

    ``advance(n)`` is called with the bytes read so far for each extent.
    """
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="hvp-zstd")
    producer = _Producer(handle, plan, pool)
    producer.start()
    zero: list[int] | None = None  # a pending run of zeros [start, length]
    try:
        while True:
            if cancelled is not None and cancelled():
                raise BackupCancelled("the backup was cancelled")
            try:
                item = producer.items.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is _END:
                break
            if item[0] == "error":
                raise _as_backup_error(item[1])
            tag, offset, length, extra = item
            if tag == "Z":
                if zero is not None and zero[0] + zero[1] == offset:
                    zero[1] += length
                else:
                    if zero is not None:
                        builder.add_zero(*zero)
                    zero = [offset, length]
                advance(extra)
                continue
            if zero is not None:
                builder.add_zero(*zero)
                zero = None
            frame = extra.result() if isinstance(extra, Future) else extra
            builder.add_data(offset, length, frame)
            advance(length)
        if zero is not None:
            builder.add_zero(*zero)
        return producer.digest.hexdigest()
    finally:
        producer.stop.set()
        producer.join(timeout=30)
        pool.shutdown(wait=True, cancel_futures=True)


def _as_backup_error(exc: BaseException) -> BaseException:
    """NBD errors become BackupError (the job ended: domain stopped, job aborted, ...)."""
    string = getattr(exc, "string", None)
    if string is not None:
        return BackupError(f"reading the disk over NBD failed: {string}")
    return exc
