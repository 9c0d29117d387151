"""Which domain type a node's guests get: kvm only where the probe says it really works.

The verdict (``kvm_usable``, ``kvm_probe``) is saved in the node record together with what
it depends on (a fingerprint of libvirt, QEMU and the CPU), so a restart does not probe
again until one of those changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..events import EventLog
from ..store import Store
from ..virt import kvm_probe
from ..virt.capabilities import choose_domain_type, parse_capabilities
from ..virt.connection import NodeConnection
from ..virt.domain_xml import DomainBuilder
from .records import TABLE, NodeRecord

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 120.0
FINGERPRINT_KEYS = ("arch", "cpu_model", "libvirt_version", "hypervisor_version",
                    "domain_types")


class KvmGuard:
    """Runs and saves the kvm probe per node and answers ``domain_type``."""

    def __init__(self, store: Store, events: EventLog,
                 connection: Callable[[str], NodeConnection],
                 info: Callable[[str], dict[str, Any]]) -> None:
        self.store = store
        self.events = events
        self.connection = connection
        self.info = info
        self._probes: dict[str, threading.Event] = {}

    def fingerprint(self, node_id: str) -> dict[str, Any]:
        """What the verdict depends on; a saved verdict for other values is stale."""
        info = self.info(node_id)
        return {key: info.get(key) for key in FINGERPRINT_KEYS}

    def connected(self, node: NodeRecord) -> None:
        """On (re)connection: remove leftover probe domains, probe unless still known."""
        info = self.info(node["id"])
        if "kvm" not in info.get("domain_types", []):
            return
        kvm_probe.remove_leftovers(self.connection(node["id"]).get())
        if node.get("domain_type", "auto") != "auto":
            return
        saved = node.get("kvm_probe") or {}
        if node.get("kvm_usable") is not None and \
                saved.get("fingerprint") == self.fingerprint(node["id"]):
            return
        done = self._probes.setdefault(node["id"], threading.Event())
        done.clear()
        threading.Thread(target=self._run, args=(node["id"], info, done),
                         name=f"kvm-probe-{node['id']}", daemon=True).start()

    def _run(self, node_id: str, info: dict[str, Any], done: threading.Event) -> None:
        def build(domain_type: str, name: str, dom_uuid: str) -> DomainBuilder:
            return DomainBuilder(name=name, uuid=dom_uuid, domain_type=domain_type,
                                 memory_mib=kvm_probe.PROBE_MEMORY_MIB, vcpus=1,
                                 arch=info.get("arch", "x86_64"), serial_log=False)

        try:
            result = kvm_probe.run_probe(self.connection(node_id).get(), build,
                                         tuple(info.get("domain_types", ())))
            log.info("node %s: kvm probe: %s", node_id, result.reason)
            self.record(node_id, result)
        except kvm_probe.ProbeInterrupted as exc:
            log.warning("node %s: kvm probe cut short (%s); probing at the next "
                        "connection", node_id, exc)
        except Exception:
            log.exception("node %s: kvm probe failed", node_id)
        finally:
            done.set()

    def record(self, node_id: str, result: kvm_probe.ProbeResult) -> None:
        """Save a verdict with what it depends on."""
        self.store.update(TABLE, node_id, {
            "kvm_usable": result.usable,
            "kvm_probe": {**result.to_dict(), "fingerprint": self.fingerprint(node_id),
                          "time": time.time()},
        })

    def mark_unusable(self, node_id: str, reason: str) -> None:
        """A kvm guest failed to start with a KVM error: TCG on this node from now on."""
        self.record(node_id, kvm_probe.ProbeResult(False, reason))
        self.events.emit("node.kvm_unusable", node_id, reason=reason)
        log.warning("node %s: KVM failed a guest start, using TCG from now on: %s",
                    node_id, reason)

    def domain_type(self, node: NodeRecord) -> str:
        """The domain type guests get on ``node`` (waits for a running probe)."""
        if node.get("domain_type", "auto") != "auto":
            return node["domain_type"]
        probe = self._probes.get(node["id"])
        if probe is not None:
            probe.wait(PROBE_TIMEOUT)
            node = self.store.get(TABLE, node["id"]) or node  # type: ignore[assignment]
        caps = parse_capabilities(self.connection(node["id"]).get().getCapabilities())
        # No verdict (the probe could not finish): emulation runs everywhere, kvm may not.
        return choose_domain_type(caps, node.get("kvm_usable") is True)
