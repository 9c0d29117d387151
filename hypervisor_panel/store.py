"""The embedded store: TinyDB behind one lock, persisted as a snapshot plus a journal.

TinyDB is not thread-safe and its JSON storage rewrites the whole file on every write, so
the panel puts every call behind one re-entrant lock and gives TinyDB a
:class:`~.store_journal.JournaledStorage`: in-memory tables, one fsynced journal line per
write (an acknowledged write survives SIGKILL or power loss), a snapshot every
``compact_every`` lines (see :mod:`.store_journal`).

Lookups by an indexed field (``name`` by default: the field services keep unique, so the
duplicate-name check of every create) use a per-table index kept by the store on insert,
update and delete and built from the loaded tables on first use, instead of a scan.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.table import Document, Table

from .errors import Conflict, NotFound
from .store_journal import (
    DIR_MODE,
    FILE_MODE,
    CorruptStore,
    JournaledStorage,
    Tables,
    _TrackedTable,
    atomic_write,
    make_private_dir,
    open_private,
)

__all__ = ["DIR_MODE", "FILE_MODE", "CorruptStore", "JournaledStorage", "Store", "Tables",
           "atomic_write", "make_private_dir", "new_id", "open_private"]


class _StrIdTable(Table):
    """Documents are keyed by the panel's string ids, so lookups by id are O(1)."""

    document_id_class = str  # type: ignore[assignment]

    def _get_next_id(self) -> str:  # type: ignore[override]
        return uuid.uuid4().hex

    def _update_table(self, updater: Callable[[dict], None]) -> None:
        # TinyDB's version copies the whole table (converting every key twice) on every
        # write: O(table) per insert. Here the stored table is a _TrackedTable changed in
        # place; the journal diff looks only at the documents the updater touched.
        tables = self._storage.read()
        table = tables.get(self.name)
        if not isinstance(table, _TrackedTable):
            table = _TrackedTable(table or {})  # once per table and process
            tables[self.name] = table
        table.touched = set()
        updater(table)
        self._storage.write(tables)
        self.clear_cache()


TinyDB.table_class = _StrIdTable


def new_id() -> str:
    """A fresh, URL-safe object id."""
    return uuid.uuid4().hex[:12]


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class _Index:
    """One field of one table: value -> ids of the documents holding it (insertion order).

    Unhashable values (lists, dicts) are left out: a lookup by a hashable value can never
    equal them, and a lookup by an unhashable one scans.
    """

    def __init__(self, docs: dict[str, dict], field: str) -> None:
        self.field = field
        self.ids: dict[Any, dict[str, None]] = {}
        for doc_id, doc in docs.items():
            self.add(doc_id, doc.get(field))

    def add(self, doc_id: str, value: Any) -> None:
        if _hashable(value):
            self.ids.setdefault(value, {})[doc_id] = None

    def remove(self, doc_id: str, value: Any) -> None:
        group = self.ids.get(value) if _hashable(value) else None
        if group is not None:
            group.pop(doc_id, None)
            if not group:
                del self.ids[value]


class Store:
    """Thread-safe document store; every object is a dict with a string ``id``.

    Returned dicts are copies of the top level; nested values must be replaced, not mutated.
    ``indexed`` fields get an index (built per table on the first lookup, then kept up to
    date by every write), so ``find(table, name=...)`` costs O(1), not O(table).
    """

    def __init__(self, path: str | Path, compact_every: int = 2000,
                 indexed: Iterable[str] = ("name",)) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = TinyDB(str(self.path), storage=JournaledStorage, compact_every=compact_every)
        self._indexed = tuple(indexed)
        self._indexes: dict[str, dict[str, _Index]] = {}  # table -> field -> index

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store lock across several calls (read-check-write sequences)."""
        with self._lock:
            yield

    def _table(self, name: str) -> Table:
        return self._db.table(name)

    def _raw(self, name: str) -> dict[str, dict]:
        """The table's documents as stored (read-only use; avoids TinyDB's per-doc wrapping)."""
        return self._db.storage.read().get(name, {})

    def _indexes_of(self, table: str) -> dict[str, _Index]:
        """The table's indexes, built from the stored documents on first use."""
        found = self._indexes.get(table)
        if found is None:
            raw = self._raw(table)
            found = self._indexes[table] = {f: _Index(raw, f) for f in self._indexed}
        return found

    def _remove(self, table: str, obj_ids: list[str]) -> None:
        """Remove stored documents (one journal write), then take them out of the indexes."""
        raw = self._raw(table)
        gone = [(obj_id, dict.get(raw, obj_id) or {}) for obj_id in obj_ids]
        self._table(table).remove(doc_ids=obj_ids)
        for index in self._indexes.get(table, {}).values():
            for obj_id, doc in gone:
                index.remove(obj_id, doc.get(index.field))

    def _candidates(self, table: str, equals: dict[str, Any]) -> Iterable[dict]:
        """The documents that may match ``equals``: an index's few, else the whole table
        (also when several share the value: the table's order is the result's order)."""
        raw = self._raw(table)
        for field in self._indexed:
            if field in equals and _hashable(equals[field]):
                ids = self._indexes_of(table)[field].ids.get(equals[field], {})
                if len(ids) <= 1:
                    return [doc for doc in (dict.get(raw, i) for i in ids) if doc is not None]
                break
        return raw.values()

    def insert(self, table: str, doc: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            doc = dict(doc)
            doc.setdefault("id", new_id())
            tbl = self._table(table)
            if tbl.contains(doc_id=doc["id"]):
                raise Conflict(f"{table} {doc['id']} already exists", code="already_exists")
            tbl.insert(Document(doc, doc_id=doc["id"]))
            for index in self._indexes.get(table, {}).values():
                index.add(doc["id"], doc.get(index.field))
            return dict(doc)

    def get(self, table: str, obj_id: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self._table(table).get(doc_id=obj_id)
            return dict(doc) if doc is not None else None

    def require(self, table: str, obj_id: str, what: str | None = None) -> dict[str, Any]:
        doc = self.get(table, obj_id)
        if doc is None:
            raise NotFound(f"{what or table} {obj_id!r} not found")
        return doc

    def raw_values(self, table: str) -> list[dict[str, Any]]:
        """The stored documents themselves, for read-only use under ``locked()``."""
        with self._lock:
            return list(self._raw(table).values())

    def all(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(d) for d in self._raw(table).values()]

    def find(self, table: str, predicate: Callable[[dict], bool] | None = None, **equals: Any):
        """Documents whose fields equal ``equals`` and for which ``predicate`` holds."""
        with self._lock:
            out = []
            for doc in self._candidates(table, equals):
                if all(doc.get(k) == v for k, v in equals.items()) and (
                    predicate is None or predicate(doc)
                ):
                    out.append(dict(doc))
            return out

    def find_one(self, table: str, **equals: Any) -> dict[str, Any] | None:
        found = self.find(table, **equals)
        return found[0] if found else None

    def update(self, table: str, obj_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            tbl = self._table(table)
            if not tbl.contains(doc_id=obj_id):
                raise NotFound(f"{table} {obj_id!r} not found")
            changed = [ix for ix in self._indexes.get(table, {}).values() if ix.field in fields]
            old = dict.get(self._raw(table), obj_id) or {}
            before = [old.get(ix.field) for ix in changed]  # the document changes in place
            tbl.update(dict(fields), doc_ids=[obj_id])
            for index, value in zip(changed, before, strict=True):
                index.remove(obj_id, value)
                index.add(obj_id, fields[index.field])
            return dict(tbl.get(doc_id=obj_id))  # type: ignore[arg-type]

    def delete(self, table: str, obj_id: str) -> None:
        with self._lock:
            tbl = self._table(table)
            if tbl.contains(doc_id=obj_id):
                self._remove(table, [obj_id])

    def delete_many(self, table: str, obj_ids: list[str]) -> None:
        """Delete these documents (missing ones are skipped) in one journal write."""
        with self._lock:
            tbl = self._table(table)
            present = [obj_id for obj_id in obj_ids if tbl.contains(doc_id=obj_id)]
            if present:
                self._remove(table, present)

    def count(self, table: str) -> int:
        with self._lock:
            return len(self._table(table))

    def compact(self) -> None:
        """Write a fresh snapshot and empty the journal now (after removing secrets)."""
        with self._lock:
            self._db.storage.compact()  # type: ignore[attr-defined]

    def close(self) -> None:
        with self._lock:
            self._db.close()
