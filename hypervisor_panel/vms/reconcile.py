"""The VMs' live state and libvirt's domain events, reconciled with the panel's records.

State comes from each node's event-fed domain cache (never a libvirt call per VM).
Changes the panel makes itself (define, undefine, migrate) are announced first with
:meth:`Reconciler.expect`, so only changes made outside the panel are flagged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import libvirt

from ..errors import PanelError
from ..events import EventLog
from ..store import Store
from .records import TABLE, VMRecord

if TYPE_CHECKING:
    from ..nodes import NodeManager


class Reconciler:
    def __init__(self, store: Store, nodes: NodeManager, events: EventLog) -> None:
        self.store = store
        self.nodes = nodes
        self.events = events
        self._expect_define: set[str] = set()
        self._expect_undefine: set[str] = set()
        self._uuid_to_vm: dict[str, str] = {}
        self._redefines: dict[str, int] = {}
        self._lock = threading.RLock()

    # -- the uuid index ------------------------------------------------------------------
    def _index(self) -> dict[str, str]:
        with self._lock:
            if not self._uuid_to_vm:
                self._uuid_to_vm = {v["uuid"]: v["id"] for v in self.store.raw_values(TABLE)}
            return self._uuid_to_vm

    def known(self, vm: VMRecord) -> None:
        with self._lock:
            self._index()[vm["uuid"]] = vm["id"]

    def forget(self, vm: VMRecord) -> None:
        with self._lock:
            self._index().pop(vm["uuid"], None)

    # -- the panel's own changes -----------------------------------------------------------
    @contextmanager
    def expect(self, dom_uuid: str, define: bool = True, undefine: bool = False
               ) -> Iterator[None]:
        """Domain events for ``dom_uuid`` inside this block are the panel's own doing."""
        sets = [s for s, on in ((self._expect_define, define),
                                (self._expect_undefine, undefine)) if on]
        for expected in sets:
            expected.add(dom_uuid)
        try:
            yield
        finally:
            for expected in sets:
                expected.discard(dom_uuid)

    def expect_undefine(self, dom_uuid: str) -> None:
        """The next undefine of ``dom_uuid`` is the panel's (cleared by its event)."""
        self._expect_undefine.add(dom_uuid)

    def expect_redefine(self, dom_uuid: str) -> None:
        """The next "defined (updated)" event of ``dom_uuid`` is the panel's own."""
        with self._lock:
            self._redefines[dom_uuid] = self._redefines.get(dom_uuid, 0) + 1

    # -- views ---------------------------------------------------------------------------
    def state_of(self, vm: VMRecord, caches: dict[str, dict[str, Any]] | None = None
                 ) -> tuple[str, dict[str, Any]]:
        """(state, stats) from the node's cache; ``caches`` (``nodes.domain_caches()``)
        saves the lookups when many VMs are shown at once."""
        if vm.get("status") in ("creating", "deleting"):
            return vm["status"], {}
        domains = (caches if caches is not None else self.nodes.domain_caches()).get(
            vm.get("node", ""))
        if domains is None:
            return "unknown", {}
        status = domains.get(vm["uuid"])
        if status is None:
            return "missing", {}
        return status.state, status.stats

    def public(self, vm: VMRecord, caches: dict[str, dict[str, Any]] | None = None
               ) -> dict[str, Any]:
        """The API view of a VM record: the record plus live state (``vm`` is not changed)."""
        state, stats = self.state_of(vm, caches)
        out: dict[str, Any] = dict(vm)
        out["state"] = state
        out["stats"] = stats
        out["addresses"] = [a["address"] for nic in vm.get("interfaces", [])
                            for a in nic.get("addresses", [])]
        if state == "missing":
            out["problem"] = "the domain was removed outside the panel"
        elif vm.get("external_change"):
            out["problem"] = "the domain was changed outside the panel"
        return out

    # -- events (called on libvirt's event thread) -------------------------------------------
    def on_domain_event(self, node_id: str, dom_uuid: str, state: str | None,
                        event: int, detail: int) -> None:
        """Record domain changes made outside the panel."""
        vm_id = self._index().get(dom_uuid)
        if vm_id is None:
            return
        if event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
            if dom_uuid in self._expect_undefine:
                self._expect_undefine.discard(dom_uuid)
                return
            self.events.emit("vm.domain_removed_outside", vm_id)
        elif (event == libvirt.VIR_DOMAIN_EVENT_DEFINED
              and detail == libvirt.VIR_DOMAIN_EVENT_DEFINED_UPDATED
              and dom_uuid not in self._expect_define and not self._own_redefine(dom_uuid)):
            try:
                self.store.update(TABLE, vm_id, {"external_change": time.time()})
            except PanelError:
                return
            self.events.emit("vm.domain_changed_outside", vm_id)
        elif state:
            self.events.emit("vm.state", vm_id, state=state)

    def _own_redefine(self, dom_uuid: str) -> bool:
        with self._lock:
            pending = self._redefines.get(dom_uuid, 0)
            if not pending:
                return False
            if pending == 1:
                del self._redefines[dom_uuid]
            else:
                self._redefines[dom_uuid] = pending - 1
            return True
