"""The event log: what happened, to what, by whom (owner of the ``events`` table).

Every event also goes to the ``track_event`` hook (audit log, notifications). The log keeps
the newest ``MAX_EVENTS``; it is trimmed at start-up and every ``TRIM_EVERY`` events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypedDict

from .store import Store

log = logging.getLogger(__name__)

TABLE = "events"
MAX_EVENTS = 5000
TRIM_EVERY = 500


class EventRecord(TypedDict):
    id: str
    kind: str
    subject: str | None
    actor: str | None
    time: float
    data: dict[str, Any]


class EventLog:
    """Records events and passes each to ``on_event`` (the panel wires the hook there)."""

    def __init__(self, store: Store, on_event: Callable[[EventRecord], None] | None = None,
                 max_events: int = MAX_EVENTS) -> None:
        self.store = store
        self.on_event = on_event
        self.max_events = max_events
        self._since_trim = 0

    def emit(self, kind: str, subject: str | None, actor: str | None = None,
             **data: Any) -> EventRecord:
        """Record an event; a failing observer never fails the caller."""
        event: EventRecord = self.store.insert(TABLE, {  # type: ignore[assignment]
            "kind": kind, "subject": subject, "actor": actor, "time": time.time(),
            "data": data})
        self._since_trim += 1
        if self._since_trim >= TRIM_EVERY:
            self.trim()
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("an event observer failed on %s", kind)
        return event

    def trim(self) -> int:
        """Drop the oldest events beyond ``max_events``; returns how many went."""
        self._since_trim = 0
        with self.store.locked():
            events = sorted(self.store.raw_values(TABLE), key=lambda e: e["time"])
            old = [e["id"] for e in events[:-self.max_events]] if \
                len(events) > self.max_events else []
            for event_id in old:
                self.store.delete(TABLE, event_id)
        return len(old)

    def recent(self, actor: str | None = None, limit: int = 100) -> list[EventRecord]:
        """Newest first; ``actor`` limits them to one user's own events."""
        items = self.store.find(TABLE, actor=actor) if actor else self.store.all(TABLE)
        items.sort(key=lambda e: e["time"], reverse=True)
        return items[:limit]  # type: ignore[return-value]
