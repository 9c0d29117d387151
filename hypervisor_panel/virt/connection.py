"""One libvirt connection per node: reconnects, keep-alive, and a domain state cache.

The cache is filled by one bulk call (``getAllDomainStats``) when the connection opens and
kept current by libvirt's lifecycle events, so listing VMs costs no libvirt call per VM.
"""

from __future__ import annotations

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


@dataclass
class DomainStatus:
    """What the panel knows about one domain without asking libvirt."""

    name: str
    state: str
    stats: dict[str, Any] = field(default_factory=dict)
    changed: float = field(default_factory=time.time)


DomainEventHandler = Callable[[str, str, str | None, int, int], None]


class NodeConnection:
    """A node's libvirt connection with its cached domain states."""

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
        self._conn: libvirt.virConnect | None = None
        self._guard = threading.RLock()
        self._on_domain_event = on_domain_event
        self._on_status = on_status
        self._callback_ids: list[int] = []

    # -- connection lifecycle ------------------------------------------------------
    def open(self) -> bool:
        """Connect, subscribe to events and load the domain cache; False if unreachable."""
        ensure_event_loop()
        with self._guard:
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                self._set_status("offline", _one_line(exc))
                return False
            try:
                if not self.uri.startswith("test:"):
                    conn.setKeepAlive(5, 3)
                conn.registerCloseCallback(self._closed, None)
                self._callback_ids = [
                    conn.domainEventRegisterAny(
                        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
                    )
                ]
            except libvirt.libvirtError as exc:
                log.warning("node %s: events unavailable: %s", self.node_id, exc)
            self._conn = conn
            self.refresh()
            self._set_status("online", None)
            return True

    def close(self) -> None:
        with self._guard:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                for cb in self._callback_ids:
                    conn.domainEventDeregisterAny(cb)
                conn.unregisterCloseCallback()
                conn.close()
            except libvirt.libvirtError:
                pass
            self._callback_ids = []

    def _closed(self, conn: libvirt.virConnect, reason: int, opaque: Any) -> None:
        with self._guard:
            if self._conn is conn:
                self._conn = None
        self._set_status("offline", f"connection closed (reason {reason})")

    def _set_status(self, status: str, error: str | None) -> None:
        changed = status != self.status
        self.status, self.error = status, error
        if changed and self._on_status:
            self._on_status(self.node_id, status, error)

    def alive(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

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
    def refresh(self) -> None:
        """Reload every domain's state and basic stats in one libvirt call."""
        conn = self._conn
        if conn is None:
            return
        fresh: dict[str, DomainStatus] = {}
        try:
            records = conn.getAllDomainStats(BULK_STATS)
        except libvirt.libvirtError:
            records = [(d, {"state.state": d.state()[0]}) for d in conn.listAllDomains()]
        for dom, stats in records:
            fresh[dom.UUIDString()] = DomainStatus(
                name=dom.name(),
                state=STATE_NAMES.get(stats.get("state.state", 0), "unknown"),
                stats=_basic_stats(stats),
            )
        self.domains = fresh

    def _lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        uuid = dom.UUIDString()
        new_state = EVENT_STATES.get(event, "")
        current = self.domains.get(uuid)
        if new_state is None:
            self.domains.pop(uuid, None)
        elif current is None:
            self.domains[uuid] = DomainStatus(name=dom.name(), state=new_state or "stopped")
        elif new_state:
            current.state, current.changed = new_state, time.time()
        if self._on_domain_event:
            try:
                self._on_domain_event(self.node_id, uuid, new_state, event, detail)
            except Exception:
                log.exception("domain event handler failed")

    def set_state(self, uuid: str, name: str, state: str | None) -> None:
        """Record a state the panel itself just caused (events may lag behind)."""
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


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def state_name(code: int) -> str:
    return STATE_NAMES.get(code, "unknown")
