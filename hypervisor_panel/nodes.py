"""Nodes: the libvirt hosts the panel manages, their connections, health and resources."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from .cluster import ssh
from .cluster.checks import local_facts
from .errors import Conflict, NotFound, PanelError, Unavailable
from .virt import kvm_probe
from .virt.capabilities import choose_domain_type, parse_capabilities
from .virt.connection import NodeConnection
from .virt.domain_xml import DomainBuilder
from .virt.events import ensure_event_loop

if TYPE_CHECKING:
    from .panel import Panel

log = logging.getLogger(__name__)

TABLE = "nodes"
LOCAL_URI = "qemu:///system"
LOCAL_CHECK_INTERVAL = 30.0
DEMO_NOTICE = ("No libvirtd answers at qemu:///system, so the panel runs on the embedded "
               "demo node (libvirt's test driver: nothing real runs). For a real node, "
               "install and start libvirt (`make services`, or apt-get install "
               "libvirt-daemon-system and start libvirtd); the Nodes page then offers to "
               "add it.")
WATCH_INTERVAL = 5.0
STATS_INTERVAL = 15.0
KVM_PROBE_TIMEOUT = 120.0


def demo_uri(data_dir: Path) -> str:
    """A test-driver URI on a private copy of the shipped demo node XML."""
    target = data_dir / "demo-node.xml"
    if not target.exists():
        src = resources.files("hypervisor_panel") / "data" / "demo-node.xml"
        with resources.as_file(src) as path:
            shutil.copyfile(path, target)
    return f"test://{target}"


def local_libvirt_answers(uri: str | None = None) -> bool:
    """Whether a libvirtd answers at ``uri`` (default: the local one), quietly."""
    ensure_event_loop()  # also silences libvirt's default error printer
    try:
        conn = libvirt.open(uri or LOCAL_URI)
    except libvirt.libvirtError:
        return False
    conn.close()
    return True


class NodeManager:
    """Keeps one NodeConnection per node, reconnects them and caches their resources."""

    def __init__(self, panel: Panel, local_uri: str | None = None) -> None:
        self.panel = panel
        self.store = panel.store
        self.local_uri = local_uri
        self._conns: dict[str, NodeConnection] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._probes: dict[str, threading.Event] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._local_check: tuple[float, bool] | None = None

    # -- start-up ----------------------------------------------------------------------
    def ensure_local_node(self) -> dict[str, Any]:
        """On first start register the local libvirtd, or the demo node when none answers."""
        existing = self.store.all(TABLE)
        if existing:
            return existing[0]
        uri = self.local_uri
        if uri is None:
            uri = LOCAL_URI if local_libvirt_answers() else demo_uri(self.panel.data_dir)
        demo = uri.startswith("test:")
        node = {
            "name": "demo" if demo else "local",
            "uri": uri,
            "kind": "demo" if demo else "local",
            "host": "localhost",
            "label": "Demo node (libvirt test driver, nothing real runs)" if demo else "",
            "domain_type": "auto",
            "kvm_usable": None,
            "created": time.time(),
        }
        return self.store.insert(TABLE, node)

    def demo_only(self) -> bool:
        """Whether the demo node is the only node (then say how to get a real one)."""
        nodes = self.store.all(TABLE)
        return bool(nodes) and all(n.get("kind") == "demo" for n in nodes)

    def local_candidate(self) -> dict[str, Any]:
        """Whether the local libvirtd answers but is no node yet (the panel offers it).

        A data directory made on the demo node keeps only that node; once libvirt is
        installed the admin adds the local daemon with :meth:`add_local`. The answer is
        cached for a while: it costs a connection.
        """
        now = time.monotonic()
        cached = self._local_check
        if cached is None or now - cached[0] > LOCAL_CHECK_INTERVAL:
            answers = local_libvirt_answers()
            self._local_check = cached = (now, answers)
        present = any(n.get("uri") == LOCAL_URI for n in self.store.all(TABLE))
        return {"uri": LOCAL_URI, "answers": cached[1], "node_exists": present,
                "offer": cached[1] and not present}

    def add_local(self) -> dict[str, Any]:
        """Add the local libvirtd (qemu:///system) as a node named "local"."""
        self._local_check = None
        if not self.local_candidate()["offer"]:
            state = self.local_candidate()
            raise Conflict("the local libvirtd is already a node" if state["node_exists"]
                           else f"no libvirtd answers at {LOCAL_URI}",
                           code="already_exists" if state["node_exists"]
                           else "local_libvirt_unavailable")
        names = {n["name"] for n in self.store.all(TABLE)}
        name = next(c for c in ("local", *(f"local-{i}" for i in range(2, 100)))
                    if c not in names)
        node = self.store.insert(TABLE, {
            "name": name, "uri": LOCAL_URI, "kind": "local", "host": "localhost",
            "label": "", "domain_type": "auto", "kvm_usable": None, "created": time.time(),
        })
        self._connect(node)
        self.panel.emit("node.add", node["id"], name=name, uri=LOCAL_URI)
        return node

    def start(self) -> None:
        for node in self.store.all(TABLE):
            if node.get("kind") == "ssh":  # remote: never hold up start-up
                self._reconnect_in_background(node["id"], self._make_conn(node))
            else:
                self._connect(node)
        self._watcher = threading.Thread(target=self._watch, name="hvp-nodes", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        """Stop watching and close every connection; never waits for an unreachable node
        (an attempt still talking to it drops its connection when it returns)."""
        self._stop.set()
        for conn in list(self._conns.values()):
            conn.close()

    def _make_conn(self, node: dict[str, Any]) -> NodeConnection:
        conn = NodeConnection(
            node["id"],
            node["uri"],
            on_domain_event=self.panel.vms.on_domain_event,
            on_status=self._status_changed,
        )
        self._conns[node["id"]] = conn
        return conn

    def file_readable(self, node_id: str, path: str) -> bool:
        """Whether ``path`` is a readable file on the node (over SSH for remote nodes)."""
        node = self.require(node_id)
        if node.get("kind") != "ssh":
            return Path(path).is_file()
        key_type, blob = node["host_key"].split()[:2]
        pinned = ssh.HostKey(key_type, blob)
        pkey = ssh.load_private_key(Path(node["keyfile"]).read_text())
        with ssh.session(node["host"], node["port"], node["username"], pinned,
                         pkey=pkey) as client:
            try:
                ssh.run(client, ["test", "-f", path, "-a", "-r", path])
            except PanelError:
                return False
        return True

    def remove(self, node_id: str) -> None:
        """Forget a node: close its connection (its record is deleted by the caller)."""
        conn = self._conns.pop(node_id, None)
        if conn is not None:
            conn.close()
        self._info.pop(node_id, None)

    def _connect(self, node: dict[str, Any]) -> NodeConnection:
        conn = self._make_conn(node)
        if conn.open():
            self._connected(node["id"])
        return conn

    def add_connection(self, node: dict[str, Any]) -> NodeConnection:
        """Connect a node that just joined (its record is already stored)."""
        return self._connect(node)

    def member_facts(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, facts) of every node, for the compatibility check of a joining node."""
        out = []
        for node in self.store.all(TABLE):
            facts = {**node.get("facts", {}), **self._info.get(node["id"], {})}
            out.append((node["name"], facts))
        return out

    def _connected(self, node_id: str) -> None:
        """Bring a (re)connected node in line with the cluster: facts, pools, demo domains."""
        self._refresh_info(node_id)
        node = self.require(node_id)
        if node.get("kind") == "local" and "facts" not in node:
            self.store.update(TABLE, node_id, {"facts": {**local_facts(),
                                                         **self._info[node_id]}})
        self.panel.storages.ensure_on_node(node_id)
        if self._conns[node_id].uri.startswith("test:"):
            # The test driver keeps its state in the connection: replay the panel's VMs.
            self.panel.vms.replay_on_node(node_id)
        elif "kvm" in self._info[node_id].get("domain_types", []):
            kvm_probe.remove_leftovers(self._conns[node_id].get())
        self._maybe_probe(self.require(node_id))

    def _status_changed(self, node_id: str, status: str, error: str | None) -> None:
        self.panel.emit("node.status", node_id, status=status, error=error)

    def _watch(self) -> None:
        """Every WATCH_INTERVAL reconnect lost nodes; every STATS_INTERVAL refresh the
        others, each in a thread of its own: a hung node delays no other and no reconnect."""
        last_stats = 0.0
        refreshing: dict[str, threading.Thread] = {}

        def refresh(node_id: str, conn: NodeConnection) -> None:
            try:
                conn.refresh()
                self._refresh_info(node_id)
            except libvirt.libvirtError as exc:
                if conn.check():  # answers: the failure was not the connection's
                    log.warning("node %s: stats failed: %s", node_id, exc)
            except (KeyError, Unavailable):
                pass  # removed or lost meanwhile
            except Exception:
                log.exception("node %s: stats failed", node_id)

        while not self._stop.wait(WATCH_INTERVAL):
            do_stats = time.monotonic() - last_stats >= STATS_INTERVAL
            for node_id, conn in list(self._conns.items()):
                try:
                    if conn.status != "online" or not conn.alive():
                        self._reconnect_in_background(node_id, conn)
                    elif do_stats and not (node_id in refreshing
                                           and refreshing[node_id].is_alive()):
                        refreshing[node_id] = threading.Thread(
                            target=refresh, args=(node_id, conn), daemon=True,
                            name=f"hvp-stats-{node_id}")
                        refreshing[node_id].start()
                except Exception:  # the watcher must outlive any one node's trouble
                    log.exception("node %s: watch failed", node_id)
            if do_stats:
                last_stats = time.monotonic()

    def _reconnect_in_background(self, node_id: str, conn: NodeConnection) -> None:
        """Reconnect in a thread of its own: an unreachable node never delays the others.

        One attempt at a time per node, except that one stuck past the connection's
        ATTEMPT_TIMEOUT no longer blocks a fresh one (NodeConnection.open_in_background).
        """
        conn.open_in_background(lambda: self._connected(node_id))

    # -- per-node facts --------------------------------------------------------------
    def _refresh_info(self, node_id: str) -> None:
        conn = self._conns[node_id].get()
        info = conn.getInfo()
        caps = parse_capabilities(conn.getCapabilities())
        try:
            free = conn.getFreeMemory()
        except libvirt.libvirtError:
            free = None
        self._info[node_id] = {
            "cpu_model": info[0],
            "memory_mib": info[1],
            "cpus": info[2],
            "mhz": info[3],
            "free_memory_mib": free // (1024 * 1024) if free is not None else None,
            "arch": caps.arch,
            "domain_types": list(caps.domain_types),
            "libvirt_version": _version(conn.getLibVersion()),
            "hypervisor_version": _version(conn.getVersion()),
        }

    def _fingerprint(self, node_id: str) -> dict[str, Any]:
        """What the kvm verdict depends on; a saved verdict for other values is stale."""
        info = self._info.get(node_id, {})
        return {key: info.get(key) for key in ("arch", "cpu_model", "libvirt_version",
                                               "hypervisor_version", "domain_types")}

    def _maybe_probe(self, node: dict[str, Any]) -> None:
        """Probe kvm in the background unless a saved verdict for this node still holds."""
        info = self._info.get(node["id"], {})
        if "kvm" not in info.get("domain_types", []):
            return
        if node.get("domain_type", "auto") != "auto":
            return
        saved = node.get("kvm_probe") or {}
        if node.get("kvm_usable") is not None and saved.get("fingerprint") == \
                self._fingerprint(node["id"]):
            return
        done = self._probes.setdefault(node["id"], threading.Event())
        done.clear()

        def build(domain_type: str, name: str, dom_uuid: str) -> DomainBuilder:
            return DomainBuilder(name=name, uuid=dom_uuid, domain_type=domain_type,
                                 memory_mib=kvm_probe.PROBE_MEMORY_MIB, vcpus=1,
                                 arch=info.get("arch", "x86_64"), serial_log=False)

        def run() -> None:
            try:
                result = kvm_probe.run_probe(self._conns[node["id"]].get(), build,
                                             tuple(info.get("domain_types", ())))
                log.info("node %s: kvm probe: %s", node["id"], result.reason)
                self.record_kvm_probe(node["id"], result)
            except kvm_probe.ProbeInterrupted as exc:
                log.warning("node %s: kvm probe cut short (%s); probing at the next "
                            "connection", node["id"], exc)
            except Exception:
                log.exception("node %s: kvm probe failed", node["id"])
            finally:
                done.set()

        threading.Thread(target=run, name=f"kvm-probe-{node['id']}", daemon=True).start()

    def record_kvm_probe(self, node_id: str, result: kvm_probe.ProbeResult) -> None:
        """Save a kvm verdict with what it depends on, so restarts do not probe again."""
        self.store.update(TABLE, node_id, {
            "kvm_usable": result.usable,
            "kvm_probe": {**result.to_dict(), "fingerprint": self._fingerprint(node_id),
                          "time": time.time()},
        })

    def mark_kvm_unusable(self, node_id: str, reason: str) -> None:
        """A kvm guest failed to start with a KVM error: use TCG on this node from now on."""
        self.record_kvm_probe(node_id, kvm_probe.ProbeResult(False, reason))
        self.panel.emit("node.kvm_unusable", node_id, reason=reason)
        log.warning("node %s: KVM failed a guest start, using TCG from now on: %s",
                    node_id, reason)

    def domain_type(self, node_id: str) -> str:
        """The domain type VMs get on this node: from capabilities, kvm only where it works."""
        node = self.require(node_id)
        if node.get("domain_type", "auto") != "auto":
            return node["domain_type"]
        probe = self._probes.get(node_id)
        if probe is not None:
            probe.wait(KVM_PROBE_TIMEOUT)
            node = self.require(node_id)
        caps = parse_capabilities(self.connection(node_id).get().getCapabilities())
        # No verdict (the probe could not finish): emulation runs everywhere, kvm may not.
        return choose_domain_type(caps, node.get("kvm_usable") is True)

    # -- lookups -----------------------------------------------------------------------
    def require(self, node_id: str) -> dict[str, Any]:
        node = self.store.get(TABLE, node_id)
        if node is None:
            raise NotFound(f"node {node_id!r} not found", code="node_not_found")
        return node

    def connection(self, node_id: str) -> NodeConnection:
        conn = self._conns.get(node_id)
        if conn is None:
            raise Unavailable(f"node {node_id!r} is not connected", code="node_offline")
        return conn

    def status(self, node_id: str) -> str:
        conn = self._conns.get(node_id)
        return conn.status if conn else "offline"

    def online_ids(self) -> list[str]:
        return [nid for nid, c in self._conns.items() if c.status == "online"]

    def placeable_ids(self) -> list[str]:
        """Online nodes that take new VMs (not in maintenance)."""
        maintenance = {n["id"] for n in self.store.find(TABLE, maintenance=True)}
        return [nid for nid in self.online_ids() if nid not in maintenance]

    def info(self, node_id: str) -> dict[str, Any]:
        return self._info.get(node_id, {})

    def public(self, node: dict[str, Any]) -> dict[str, Any]:
        conn = self._conns.get(node["id"])
        out = {k: v for k, v in node.items() if k not in ("password", "ssh_private_key")}
        out["status"] = conn.status if conn else "offline"
        out["status_reason"] = conn.error if conn else "not connected"
        if node.get("maintenance") and out["status"] == "online":
            out["status"], out["status_reason"] = "maintenance", node.get("maintenance_reason")
        out["resources"] = self._info.get(node["id"], {})
        if conn is not None:
            states = [d.state for d in conn.domains.values()]
            out["resources"] = {
                **out["resources"],
                "domains": len(states),
                "running": sum(1 for s in states if s == "running"),
            }
        return out


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"
