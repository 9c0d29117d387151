"""The store's persistence: in-memory tables, a fsynced journal, periodic snapshots.

``JournaledStorage`` is the TinyDB storage behind :class:`~.store.Store` (see that module
for the whole picture):

* ``write()`` computes what changed (each table is a ``_TrackedTable`` that records which
  documents a write touched, so only those are compared, and tables are changed in place:
  a write costs O(documents touched), not O(table)), appends one checksummed line to the
  journal and fsyncs it before returning: an acknowledged write survives SIGKILL or power
  loss;
* every ``compact_every`` journal lines the state is written to a new snapshot (temporary
  file + fsync + rename) and the journal is emptied. Journal lines carry a sequence number,
  so a crash between the rename and the truncation replays nothing twice. The lines found
  at open count too (and a journal already over the threshold is compacted at open): a
  panel restarted more often than every ``compact_every`` writes still compacts.

A torn last journal line (a write that was never acknowledged) is ignored on load.

The snapshot, the journal and temporary files are created 0600 whatever the umask (files
of earlier versions are tightened on open), and a folder the store creates is 0700: they
hold password hashes and the panel's settings.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import zlib
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

Tables = dict[str, dict[str, dict]]
FILE_MODE, DIR_MODE = 0o600, 0o700


class CorruptStore(RuntimeError):
    """The journal is damaged before its last line: refuse to guess."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_private(path: Path, mode: str = "ab") -> Any:
    """Open (creating) ``path`` as a file only its owner may read and write (0600)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode on open: tighten it
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) 0700; an existing folder is left as it is."""
    if not path.is_dir():
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) so a reader sees the old or the new file, never
    a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open_private(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _encode_line(seq: int, ops: list) -> bytes:
    payload = json.dumps({"seq": seq, "ops": ops}, separators=(",", ":")).encode()
    return b"%08x " % zlib.crc32(payload) + payload + b"\n"


def _decode_line(line: bytes) -> dict | None:
    """Return the entry, or None when the line is torn or fails its checksum."""
    if not line.endswith(b"\n") or len(line) < 10:
        return None
    crc, payload = line[:8], line[9:-1]
    try:
        if int(crc, 16) != zlib.crc32(payload):
            return None
        return json.loads(payload)
    except ValueError:
        return None


class JournaledStorage(Storage):
    """TinyDB storage: in-memory tables, a fsynced append-only journal, periodic snapshots."""

    def __init__(self, path: str, compact_every: int = 2000) -> None:
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        make_private_dir(self.path.parent)
        self.compact_every = compact_every
        if self.path.exists():
            os.chmod(self.path, FILE_MODE)  # written by an earlier version, maybe 0644
        self._data, self._seq, lines = self._load()
        self._shadow: Tables = copy.deepcopy(self._data)
        self._seen: dict[str, dict] = dict(self._data)
        self._journal = open_private(self.journal_path)  # kept open on purpose
        self._entries = lines  # journal lines since the last snapshot, earlier runs' too
        if self._entries >= self.compact_every:
            self.compact()

    # -- loading ---------------------------------------------------------------------
    def _load(self) -> tuple[Tables, int, int]:
        """The tables, the last sequence number and how many whole journal lines there are."""
        tables: Tables = {}
        seq = lines_kept = 0
        if self.path.exists():
            snap = json.loads(self.path.read_bytes() or b"{}")
            tables, seq = snap.get("tables", {}), snap.get("seq", 0)
        if self.journal_path.exists():
            lines = self.journal_path.read_bytes().splitlines(keepends=True)
            good = 0  # bytes of whole lines: a torn tail is cut off before appending
            for index, line in enumerate(lines):
                entry = _decode_line(line)
                if entry is None:
                    if index == len(lines) - 1:
                        os.truncate(self.journal_path, good)  # never acknowledged
                        break
                    raise CorruptStore(f"{self.journal_path}: line {index + 1} is damaged")
                good += len(line)
                lines_kept += 1
                if entry["seq"] <= seq:
                    continue
                _apply(tables, entry["ops"])
                seq = entry["seq"]
        return tables, seq, lines_kept

    # -- Storage API -----------------------------------------------------------------
    def read(self) -> Tables:
        return self._data

    def write(self, data: Tables) -> None:
        ops = self._diff(data)
        for table in data.values():
            if isinstance(table, _TrackedTable):
                table.touched = set()
        self._data = data
        self._seen = dict(data)
        if not ops:
            return
        self._seq += 1
        self._journal.write(_encode_line(self._seq, ops))
        self._journal.flush()
        os.fsync(self._journal.fileno())
        _apply(self._shadow, copy.deepcopy(ops))
        self._entries += 1
        if self._entries >= self.compact_every:
            self.compact()

    def close(self) -> None:
        if not self._journal.closed:
            self._journal.close()

    # -- internals -------------------------------------------------------------------
    def _diff(self, data: Tables) -> list:
        ops: list = []
        for name, table in data.items():
            tracked = isinstance(table, _TrackedTable)
            if self._seen.get(name) is table and not (tracked and table.touched != set()):
                continue  # nobody touched this table
            old = self._shadow.get(name)
            if old is None:
                ops.append(["table", name])
                old = {}
            touched = getattr(table, "touched", None)
            if touched is None:
                touched = set(dict.keys(table)) | old.keys()
            for doc_id in touched:
                doc = dict.get(table, doc_id)
                if doc is None:
                    if doc_id in old:
                        ops.append(["del", name, doc_id])
                elif old.get(doc_id) != doc:
                    ops.append(["set", name, doc_id, doc])
        ops.extend(["drop", name] for name in self._shadow.keys() - data.keys())
        return ops

    def compact(self) -> None:
        """Write the whole state as a new snapshot, then empty the journal."""
        snapshot = json.dumps({"seq": self._seq, "tables": self._shadow}, separators=(",", ":"))
        atomic_write(self.path, snapshot.encode())
        self._journal.close()
        with open_private(self.journal_path, "wb") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        self._journal = open_private(self.journal_path)
        self._entries = 0


def _apply(tables: Tables, ops: list) -> None:
    for op in ops:
        kind, name = op[0], op[1]
        if kind == "table":
            tables.setdefault(name, {})
        elif kind == "set":
            tables.setdefault(name, {})[op[2]] = op[3]
        elif kind == "del":
            tables.get(name, {}).pop(op[2], None)
        elif kind == "drop":
            tables.pop(name, None)


class _TrackedTable(dict):
    """A table dict that remembers which documents an updater could have changed.

    TinyDB updaters reach documents by key (``table[id]``, ``pop``, assignment); a full
    iteration marks everything as touched, so the journal diff stays correct either way
    while a single-document update diffs one document instead of the whole table.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.touched: set[str] | None = set()

    def _touch(self, key: str) -> None:
        if self.touched is not None:
            self.touched.add(key)

    def __getitem__(self, key: str) -> Any:
        self._touch(key)
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._touch(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._touch(key)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self._touch(key)
        return super().pop(key, *default)

    def _touch_all(self) -> None:
        self.touched = None

    def get(self, key: str, default: Any = None) -> Any:
        self._touch(key)
        return super().get(key, default)

    def clear(self) -> None:
        self._touch_all()
        super().clear()


