"""One libvirt connection per node: reconnects, keep-alive, and a domain state cache.

The cache is filled by one bulk call (``getAllDomainStats``) when the connection opens and
kept current by libvirt's lifecycle events, so listing VMs costs no libvirt call per VM.

No lock is ever held while libvirt talks to a node: an unreachable or hung node then never
blocks the API, the shared event-loop thread (close callbacks) or the panel's shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt

from ..errors import Unavailable
from .events import ensure_event_loop

log = logging.getLogger(__name__)

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}

# Lifecycle event -> resulting state (None: the domain is gone; "" : state unchanged).
EVENT_STATES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: None,
    libvirt.VIR_DOMAIN_EVENT_STARTED: "running",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "paused",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "running",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}

BULK_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
)
KEEPALIVE_INTERVAL = 5  # seconds between pings; the link is dead after KEEPALIVE_COUNT misses
KEEPALIVE_COUNT = 3
# libvirt's SSH transport has no timeout of its own (a handshake with a silent peer blocks
# forever): an attempt older than this no longer stops a fresh one from starting.
ATTEMPT_TIMEOUT = 20.0


@dataclass
class DomainStatus:
    """What the panel knows about one domain without asking libvirt."""

    name: str
    state: str
    stats: dict[str, Any] = field(default_factory=dict)
    changed: float = field(default_factory=time.time)


DomainEventHandler = Callable[[str, str, str | None, int, int], None]
Subscription = tuple[libvirt.virConnect, list[int]]  # a connection and its event callbacks


class NodeConnection:
    """A node's libvirt connection with its cached domain states.

    Callers ask the class attributes below instead of testing the URI; a subclass (the
    demo node, virt/demo.py) overrides them and the ``_connect``/``_subscribe``/
    ``_unsubscribe``/``changed`` hooks.
    """

    kind = "libvirt"  # "libvirt": a real libvirtd; "demo": the embedded test-driver node
    serial_logs = True  # guests' serial consoles can log to a file on the node
    keepalive = True  # libvirt keep-alive pings detect a dead link

    def __init__(
        self,
        node_id: str,
        uri: str,
        on_domain_event: DomainEventHandler | None = None,
        on_status: Callable[[str, str, str | None], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.uri = uri
        self.status = "connecting"
        self.error: str | None = None
        self.domains: dict[str, DomainStatus] = {}
        # When each domain's cached state last changed by an event or the panel itself, so a
        # bulk refresh that started earlier never overwrites a newer state.
        self._touched: dict[str, float] = {}
        self._cache_lock = threading.Lock()
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: list[int] = []
        self._on_domain_event = on_domain_event
        self._on_status = on_status
        # Guards the fields below and _conn; held only to swap them, never around libvirt.
        self._guard = threading.Lock()
        self._attempt: tuple[int, float] | None = None  # (number, start) of the newest open
        self._attempts = 0
        self._dropped: list[Subscription] = []  # closed by libvirt, to release off-callback
        self._shut = False

    # -- connection lifecycle ------------------------------------------------------
    def open(self) -> bool:
        """Connect, subscribe to events and load the domain cache; False if unreachable."""
        number = self._begin(force=True)
        return number is not None and self._open(number) is not None

    def open_in_background(self, then: Callable[[], None]) -> bool:
        """Reconnect in a thread of its own, calling ``then`` once connected.

        False (nothing started) while a younger attempt than ATTEMPT_TIMEOUT runs; an
        older one counts as stuck and a fresh one starts: the first to connect is kept.
        """
        number = self._begin(force=False)
        if number is None:
            return False

        def attempt() -> None:
            try:
                if self._open(number):
                    then()
            except Exception:
                log.exception("node %s: reconnect failed", self.node_id)

        threading.Thread(target=attempt, name=f"hvp-reconnect-{self.node_id}",
                         daemon=True).start()
        return True

    def _begin(self, force: bool) -> int | None:
        with self._guard:
            if self._shut:
                return None
            running = self._attempt
            if not force and running and time.monotonic() - running[1] < ATTEMPT_TIMEOUT:
                return None
            self._attempts += 1
            self._attempt = (self._attempts, time.monotonic())
            return self._attempts

    def _open(self, number: int) -> bool | None:
        """One attempt: True when its connection is now in use, False when another
        attempt's already was, None when the node could not be reached."""
        ensure_event_loop()
        try:
            self._release_dropped()
            current = self._conn
            if current is not None and not _alive(current):
                self._drop(current, "connection lost")
            try:
                conn = self._connect()
            except (libvirt.libvirtError, Unavailable) as exc:
                if self._conn is None:  # no other attempt connected meanwhile
                    self._set_status("offline", _one_line(exc))
                return None
            callback_ids = self._subscribe(conn)
            with self._guard:
                installed = not self._shut and self._conn is None
                if installed:
                    self._conn, self._callback_ids = conn, callback_ids
            if not installed:
                self._unsubscribe(conn)
                _release(conn, callback_ids)
                if self._shut:
                    return None
                if self.status != "online":  # a failed attempt overtook the winner
                    self._set_status("online", None)
                return False
            try:
                self.refresh(conn)
            except libvirt.libvirtError as exc:
                self._drop(conn, _one_line(exc))
                return None
            if self._conn is not conn:
                return None  # lost again at once
            self._set_status("online", None)
            return True
        finally:
            with self._guard:
                if self._attempt and self._attempt[0] == number:
                    self._attempt = None

    def _connect(self) -> libvirt.virConnect:
        """Open the libvirt connection (hook: may raise Unavailable with a clear reason)."""
        return libvirt.open(self.uri)

    def _subscribe(self, conn: libvirt.virConnect) -> list[int]:
        """Keep-alive, close callback and lifecycle events; the ids to deregister."""
        callback_ids: list[int] = []
        try:
            conn.registerCloseCallback(self._closed, None)
            callback_ids.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None))
            if self.keepalive:
                conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except libvirt.libvirtError as exc:
            log.warning("node %s: events unavailable: %s", self.node_id, exc)
        return callback_ids

    def _unsubscribe(self, conn: libvirt.virConnect) -> None:
        """Hook: undo what an override of _subscribe added beyond the domain-event ids it
        returned; called just before ``conn`` is released."""

    def changed(self) -> None:
        """Hook: the node's objects changed without a libvirt event (a volume was made or
        deleted). Nothing to do for a real node; the demo node saves its state."""

    def close(self) -> None:
        """Disconnect for good (the node is removed or the panel stops); never blocks on
        an attempt still talking to the node (it drops its connection when it returns)."""
        with self._guard:
            self._shut = True
            conn, callback_ids, self._conn, self._callback_ids = (
                self._conn, self._callback_ids, None, [])
        if conn is not None:
            self._unsubscribe(conn)
            _release(conn, callback_ids)
        self._release_dropped()

    def check(self) -> bool:
        """Whether the connection answers a trivial call; if not, it is dropped (a dead
        link whose close callback never came) and the watcher reconnects."""
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.getLibVersion()
        except libvirt.libvirtError as exc:
            self._drop(conn, f"not answering: {_one_line(exc)}")
            return False
        return True

    def _drop(self, conn: libvirt.virConnect | None, reason: str) -> None:
        with self._guard:
            if conn is None or self._conn is not conn:
                return  # already replaced or dropped
            callback_ids, self._conn, self._callback_ids = self._callback_ids, None, []
        self._unsubscribe(conn)
        _release(conn, callback_ids)
        self._set_status("offline", reason)

    def _closed(self, conn: libvirt.virConnect, reason: int, opaque: Any) -> None:
        """libvirt's close callback, on the shared event-loop thread: it only takes the
        short guard, and leaves the release (which waits for this callback) to others."""
        with self._guard:
            if self._conn is not conn:
                return  # a connection already replaced
            self._dropped.append((conn, self._callback_ids))
            self._conn, self._callback_ids = None, []
        self._set_status("offline", f"connection closed (reason {reason})")

    def _release_dropped(self) -> None:
        with self._guard:
            dropped, self._dropped = self._dropped, []
        for conn, callback_ids in dropped:
            self._unsubscribe(conn)
            _release(conn, callback_ids)

    def _set_status(self, status: str, error: str | None) -> None:
        changed = status != self.status
        self.status, self.error = status, error
        if changed and self._on_status:
            self._on_status(self.node_id, status, error)

    def alive(self) -> bool:
        conn = self._conn
        return conn is not None and _alive(conn)

    def get(self) -> libvirt.virConnect:
        """The live connection, or 503 when the node is unreachable."""
        conn = self._conn
        if conn is None:
            raise Unavailable(
                f"node {self.node_id} is offline: {self.error or 'not connected'}",
                code="node_offline",
            )
        return conn

    # -- domain cache ----------------------------------------------------------------
    def refresh(self, conn: libvirt.virConnect | None = None) -> None:
        """Reload every domain's state and basic stats in one libvirt call."""
        conn = conn or self._conn
        if conn is None:
            return
        fresh: dict[str, DomainStatus] = {}
        started = time.monotonic()
        try:
            records = conn.getAllDomainStats(BULK_STATS)
        except libvirt.libvirtError:
            records = []
            for dom in conn.listAllDomains():
                with contextlib.suppress(libvirt.libvirtError):  # gone meanwhile
                    records.append((dom, {"state.state": dom.state()[0]}))
        for dom, stats in records:
            fresh[dom.UUIDString()] = DomainStatus(
                name=dom.name(),
                state=STATE_NAMES.get(stats.get("state.state", 0), "unknown"),
                stats=_basic_stats(stats),
            )
        with self._cache_lock:
            for uuid, when in list(self._touched.items()):
                if when < started:
                    del self._touched[uuid]
                    continue
                current = self.domains.get(uuid)  # changed while the bulk call ran: keep it
                if current is None:
                    fresh.pop(uuid, None)
                else:
                    fresh[uuid] = current
            self.domains = fresh

    def _lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        uuid = dom.UUIDString()
        new_state = EVENT_STATES.get(event, "")
        with self._cache_lock:
            self._touched[uuid] = time.monotonic()
            current = self.domains.get(uuid)
            if new_state is None:
                self.domains.pop(uuid, None)
            elif current is None:
                self.domains[uuid] = DomainStatus(name=dom.name(),
                                                  state=new_state or "stopped")
            elif new_state:
                current.state, current.changed = new_state, time.time()
        if self._on_domain_event:
            try:
                self._on_domain_event(self.node_id, uuid, new_state, event, detail)
            except Exception:
                log.exception("domain event handler failed")

    def set_state(self, uuid: str, name: str, state: str | None) -> None:
        """Record a state the panel itself just caused (events may lag behind)."""
        with self._cache_lock:
            self._touched[uuid] = time.monotonic()
            if state is None:
                self.domains.pop(uuid, None)
            elif uuid in self.domains:
                self.domains[uuid].state = state
            else:
                self.domains[uuid] = DomainStatus(name=name, state=state)


def _basic_stats(stats: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "cpu.time" in stats:
        out["cpu_time_ns"] = stats["cpu.time"]
    if "balloon.current" in stats:
        out["memory_kib"] = stats["balloon.current"]
    if "balloon.rss" in stats:
        out["rss_kib"] = stats["balloon.rss"]
    if "vcpu.current" in stats:
        out["vcpus"] = stats["vcpu.current"]
    return out


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _release(conn: libvirt.virConnect, callback_ids: list[int]) -> None:
    """Unsubscribe and close; every step runs even when one before failed (a dead
    connection refuses them all, and skipping close() would leak it)."""
    for callback_id in callback_ids:
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(callback_id)
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def state_name(code: int) -> str:
    return STATE_NAMES.get(code, "unknown")
