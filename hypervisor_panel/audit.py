"""The audit log: who did what, when, from where, with what result (owner of ``audit``).

The web dispatcher records every state-changing API call (POST, PUT, PATCH, DELETE),
failed ones included (401, 403, 4xx, 5xx), and the browser's sign-in and sign-out. An
entry holds: the time; the actor (user id and name, token id and kind when a token or
session was used); the remote address (the connection's, never ``X-Forwarded-For``); the
method, the route pattern (``/vms/{vm_id}``), the concrete path and its parameters; the
action (``POST /vms``); the HTTP status, the error code of a failed call and its duration.

Deliberately not recorded: request bodies, query strings, token secrets and passwords.
Only a whitelisted summary of a body is kept (``SUMMARY_FIELDS``: names and ids such as
``name``, ``username``, ``vm_template``; short scalars only), so a login attempt records
the name it tried, never the password.

Every entry also goes to ``on_entry`` (the panel passes it to every plugin's
``track_event`` as an event of kind ``audit.<method>``); a failing observer never fails
the call. The log keeps at most ``max_entries`` entries and none older than ``max_days``:
it is trimmed at start-up, every ``TRIM_EVERY`` entries and at the first entry an hour
after the last trim.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

from .errors import BadRequest
from .events import EventRecord
from .store import Store

log = logging.getLogger(__name__)

TABLE = "audit"
MAX_ENTRIES = 20_000
MAX_DAYS = 90
TRIM_EVERY = 500  # entries between two trims
TRIM_INTERVAL = 3600.0  # seconds: a quiet panel still drops entries older than max_days
MAX_LIMIT = 1000
SUMMARY_FIELDS = ("name", "username", "role", "backend", "mode", "kind", "node", "storage",
                  "vm_template", "os_template", "recipe", "network", "target", "owner",
                  "scope", "vm", "state")
SUMMARY_TEXT = 100  # characters kept of a summarised string
DAY = 86400.0


class AuditRecord(TypedDict):
    id: str
    time: float
    user_id: str | None
    user_name: str | None
    token_id: str | None
    token_kind: str | None
    address: str | None
    method: str
    route: str
    path: str
    params: dict[str, str]
    subject: str | None
    action: str
    status: int
    ok: bool
    error: str | None
    duration_ms: float
    summary: dict[str, Any]


@dataclass(frozen=True)
class AuditCall:
    """One finished state-changing call, as the dispatcher saw it."""

    method: str
    route: str  # the pattern, e.g. /vms/{vm_id}
    path: str  # the concrete path, without the query string
    status: int
    params: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None  # the JSON error's code
    user: Mapping[str, Any] | None = None
    token: Mapping[str, Any] | None = None
    address: str | None = None
    duration_ms: float = 0.0
    body: Mapping[str, Any] | None = None  # only SUMMARY_FIELDS of it are kept
    subject: str | None = None  # the object acted on when the path does not name it


@dataclass
class AuditQuery:
    """Filters of :meth:`AuditLog.search`; every given one must hold."""

    actor: str | None = None  # user name or id (or the name a login tried)
    action: str | None = None  # "POST /vms", or a method
    method: str | None = None
    route: str | None = None  # the exact pattern
    path: str | None = None  # a substring of the concrete path
    result: str | None = None  # ok, failed, a status (404) or a class (4xx)
    since: str | float | None = None  # epoch seconds or ISO-8601
    until: str | float | None = None
    vm: str | None = None  # subject id (a VM's, or any object's)
    limit: int = 100
    offset: int = 0
    before: str | None = None  # an entry id: only entries older than it


def summarise(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """The whitelisted scalars of a request body (never passwords, keys or tokens)."""
    out: dict[str, Any] = {}
    for key in SUMMARY_FIELDS:
        value = (body or {}).get(key)
        if isinstance(value, str):
            out[key] = value[:SUMMARY_TEXT]
        elif isinstance(value, bool | int | float):
            out[key] = value
    return out


def parse_time(value: str | float | None, name: str) -> float | None:
    """Epoch seconds of ``value`` (epoch seconds or ISO-8601; naive times are UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"?{name} must be epoch seconds or an ISO-8601 time",
                         code="bad_query") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def audit_event(entry: AuditRecord) -> EventRecord:
    """The entry as the event ``track_event`` plugins see (kind ``audit.<method>``)."""
    return {"id": entry["id"], "kind": f"audit.{entry['method'].lower()}",
            "subject": entry["subject"], "actor": entry["user_id"], "time": entry["time"],
            "data": dict(entry)}


def _entry(call: AuditCall) -> dict[str, Any]:
    user, token = call.user or {}, call.token or {}
    summary = summarise(call.body)
    params = {k: str(v) for k, v in call.params.items()}
    subject = params.get("vm_id") or call.subject or next(iter(params.values()), None)
    return {
        "time": time.time(), "user_id": user.get("id"), "user_name": user.get("name"),
        "token_id": token.get("id"), "token_kind": token.get("kind"),
        "address": call.address, "method": call.method, "route": call.route,
        "path": call.path, "params": params, "subject": subject,
        "action": f"{call.method} {call.route}", "status": call.status,
        "ok": call.status < 400, "error": call.error if call.status >= 400 else None,
        "duration_ms": round(call.duration_ms, 1), "summary": summary}


class AuditLog:
    """Records audit entries, bounds them, and finds them for admins."""

    def __init__(self, store: Store, on_entry: Callable[[AuditRecord], None] | None = None,
                 max_entries: int = MAX_ENTRIES, max_days: float = MAX_DAYS) -> None:
        self.store = store
        self.on_entry = on_entry
        self.max_entries = max_entries
        self.max_days = max_days
        self._since_trim = 0
        self._last_trim = time.monotonic()

    def record(self, call: AuditCall) -> AuditRecord:
        """Store the entry and pass it on; a failing observer never fails the call."""
        entry: AuditRecord = self.store.insert(TABLE, _entry(call))  # type: ignore[assignment]
        self._since_trim += 1
        if self._since_trim >= TRIM_EVERY or \
                time.monotonic() - self._last_trim >= TRIM_INTERVAL:
            self.trim()
        if self.on_entry is not None:
            try:
                self.on_entry(entry)
            except Exception:
                log.exception("an audit observer failed on %s", entry["action"])
        return entry

    def trim(self, now: float | None = None) -> int:
        """Drop entries older than ``max_days`` and the oldest beyond ``max_entries``;
        returns how many went (all in one store write)."""
        self._since_trim, self._last_trim = 0, time.monotonic()
        cutoff = (now if now is not None else time.time()) - self.max_days * DAY
        with self.store.locked():
            entries = sorted(self.store.raw_values(TABLE), key=lambda e: (e["time"], e["id"]))
            keep = [e for e in entries if e["time"] >= cutoff][-self.max_entries:] \
                if self.max_entries > 0 else []
            kept = {e["id"] for e in keep}
            old = [e["id"] for e in entries if e["id"] not in kept]
            if old:
                self.store.delete_many(TABLE, old)
        return len(old)

    def count(self) -> int:
        return self.store.count(TABLE)

    def search(self, query: AuditQuery) -> tuple[list[AuditRecord], int]:
        """(entries newest first, from ``offset`` and after the ``before`` cursor, at most
        ``limit`` of them; how many matched in all)."""
        match = _matcher(query)
        if query.before:
            cursor, test = self._cursor(query.before), match
            match = lambda e: (e["time"], e["id"]) < cursor and test(e)  # noqa: E731
        found = sorted(self.store.find(TABLE, match),
                       key=lambda e: (e["time"], e["id"]), reverse=True)
        limit = max(1, min(query.limit, MAX_LIMIT))
        start = max(0, query.offset)
        return found[start:start + limit], len(found)  # type: ignore[return-value]

    def _cursor(self, entry_id: str) -> tuple[float, str]:
        entry = self.store.get(TABLE, entry_id)
        if entry is None:
            raise BadRequest(f"?before={entry_id} is no audit entry (trimmed?)",
                             code="bad_query")
        return entry["time"], entry["id"]


def _result_test(result: str | None) -> Callable[[int], bool] | None:
    """``result`` as a test of a status: ok, failed, 404, 4xx."""
    if not result:
        return None
    text = result.strip().lower()
    if text in ("ok", "success", "succeeded"):
        return lambda status: status < 400
    if text in ("failed", "fail", "error"):
        return lambda status: status >= 400
    if len(text) == 3 and text[0].isdigit() and text[1:] == "xx":
        return lambda status: status // 100 == int(text[0])
    if text.isdigit():
        return lambda status: status == int(text)
    raise BadRequest("?result must be ok, failed, a status (404) or a class (4xx)",
                     code="bad_query")


def _matcher(q: AuditQuery) -> Callable[[dict[str, Any]], bool]:
    """A predicate over stored entries for the filters of ``q``."""
    since, until = parse_time(q.since, "since"), parse_time(q.until, "until")
    status_ok = _result_test(q.result)
    action = (q.action or "").strip().upper()
    tests: list[Callable[[dict[str, Any]], bool]] = []
    if q.actor:
        tests.append(lambda e: q.actor in (e.get("user_id"), e.get("user_name"),
                                           e.get("summary", {}).get("username")))
    if action:
        tests.append(lambda e: e["action"].upper() == action if " " in action
                     else e["method"] == action)
    if q.method:
        tests.append(lambda e: e["method"] == q.method.upper())  # type: ignore[union-attr]
    if q.route:
        tests.append(lambda e: e["route"] == q.route)
    if q.path:
        tests.append(lambda e: q.path in e["path"])  # type: ignore[operator]
    if status_ok is not None:
        tests.append(lambda e: status_ok(e["status"]))
    if since is not None:
        tests.append(lambda e: e["time"] >= since)
    if until is not None:
        tests.append(lambda e: e["time"] <= until)
    if q.vm:
        tests.append(lambda e: q.vm == e.get("subject") or q.vm in e["params"].values())
    return lambda e: all(test(e) for test in tests)
