"""Nodes: the libvirt hosts the panel manages (owner of the ``nodes`` table).

One connection per node (``virt.demo.connection_for``: the demo node is a connection like
any other), reconnected in the background; facts and stats refreshed off the request path.
Other services hear about nodes through callbacks the panel wires: ``on_connected`` (a node
came (back) online: define the storages there), ``on_domain_event`` and ``evacuate``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt

from ..cluster import ssh, tunnel
from ..cluster.checks import local_facts
from ..errors import Conflict, NotFound, PanelError, Unavailable
from ..events import EventLog
from ..references import References
from ..store import Store
from ..virt.connection import DomainEventHandler, NodeConnection
from ..virt.demo import connection_for, demo_uri
from ..virt.facts import libvirt_facts
from . import local
from .context import NodeHandle, node_session
from .kvm import KvmGuard
from .local import local_libvirt_answers, node_record
from .records import TABLE, NodeRecord

log = logging.getLogger(__name__)

WATCH_INTERVAL = 5.0
STATS_INTERVAL = 15.0
LOCAL_CHECK_INTERVAL = 30.0
SECRET_FIELDS = ("password", "ssh_private_key")
USER_FIELDS = ("id", "name", "status", "kind")  # what a non-admin sees of a node


class NodeManager:
    """Keeps one NodeConnection per node, reconnects them and caches their resources."""

    def __init__(self, store: Store, events: EventLog, references: References,
                 data_dir: Path, local_uri: str | None = None) -> None:
        self.store, self.events, self.references = store, events, references
        self.data_dir = data_dir
        self.local_uri = local_uri
        self.on_connected: list[Callable[[str], None]] = []
        self.on_domain_event: DomainEventHandler | None = None
        self.evacuate: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
        self._conns: dict[str, NodeConnection] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._local_check: tuple[float, bool] | None = None
        self.kvm = KvmGuard(store, events, self.connection, self.info)

    # -- start-up ----------------------------------------------------------------------
    def ensure_local_node(self) -> NodeRecord:
        """On first start register the local libvirtd, or the demo node when none answers."""
        existing = self.all()
        if existing:
            return existing[0]
        uri = self.local_uri
        if uri is None:
            uri = local.LOCAL_URI if local_libvirt_answers() else demo_uri(self.data_dir)
        return self.store.insert(TABLE, node_record(uri))  # type: ignore[return-value]

    def start(self) -> None:
        for node in self.all():
            if node.get("kind") == "ssh":  # remote: never hold up start-up
                self._reconnect(node["id"], self._make_conn(node))
            else:
                self._connect(node)
        threading.Thread(target=self._watch, name="hvp-nodes", daemon=True).start()

    def close(self) -> None:
        """Stop watching and close every connection; never waits for an unreachable node
        (an attempt still talking to it drops its connection when it returns)."""
        self._stop.set()
        for conn in list(self._conns.values()):
            conn.close()

    def _make_conn(self, node: NodeRecord) -> NodeConnection:
        conn = connection_for(node["id"], node["uri"], on_domain_event=self._domain_event,
                              on_status=self._status_changed)
        self._conns[node["id"]] = conn
        return conn

    def _connect(self, node: NodeRecord) -> NodeConnection:
        conn = self._make_conn(node)
        if conn.open():
            self._connected(node["id"])
        return conn

    def _reconnect(self, node_id: str, conn: NodeConnection) -> None:
        """Reconnect in a thread of its own: an unreachable node never delays the others
        (one attempt at a time, unless one is stuck: NodeConnection.open_in_background)."""
        conn.open_in_background(lambda: self._connected(node_id))

    def _connected(self, node_id: str) -> None:
        """Bring a (re)connected node in line with the cluster: facts, storages, kvm."""
        self._info[node_id] = libvirt_facts(self._conns[node_id].get())
        node = self.require(node_id)
        if node.get("kind") == "local" and "facts" not in node:
            self.store.update(TABLE, node_id, {"facts": {**local_facts(),
                                                         **self._info[node_id]}})
        for listener in self.on_connected:
            listener(node_id)
        self.kvm.connected(self.require(node_id))

    def _domain_event(self, node_id: str, dom_uuid: str, state: str | None, event: int,
                      detail: int) -> None:
        if self.on_domain_event is not None:
            self.on_domain_event(node_id, dom_uuid, state, event, detail)

    def _status_changed(self, node_id: str, status: str, error: str | None) -> None:
        self.events.emit("node.status", node_id, status=status, error=error)

    def _refresh(self, node_id: str, conn: NodeConnection) -> None:
        try:
            conn.refresh()
            self._info[node_id] = libvirt_facts(conn.get())
        except libvirt.libvirtError as exc:
            if conn.check():  # answers: the failure was not the connection's
                log.warning("node %s: stats failed: %s", node_id, exc)
        except (KeyError, Unavailable):
            pass  # removed or lost meanwhile
        except Exception:
            log.exception("node %s: stats failed", node_id)

    def _watch(self) -> None:
        """Every WATCH_INTERVAL reconnect lost nodes; every STATS_INTERVAL refresh the
        others, each in a thread of its own: a hung node delays no other and no reconnect."""
        last_stats = 0.0
        refreshing: dict[str, threading.Thread] = {}
        while not self._stop.wait(WATCH_INTERVAL):
            do_stats = time.monotonic() - last_stats >= STATS_INTERVAL
            for node_id, conn in list(self._conns.items()):
                try:
                    if conn.status != "online" or not conn.alive():
                        self._reconnect(node_id, conn)
                    elif do_stats and not (node_id in refreshing
                                           and refreshing[node_id].is_alive()):
                        refreshing[node_id] = threading.Thread(
                            target=self._refresh, args=(node_id, conn), daemon=True,
                            name=f"hvp-stats-{node_id}")
                        refreshing[node_id].start()
                except Exception:  # the watcher must outlive any one node's trouble
                    log.exception("node %s: watch failed", node_id)
            if do_stats:
                last_stats = time.monotonic()

    # -- the local libvirtd ------------------------------------------------------------
    def demo_only(self) -> bool:
        """Whether the demo node is the only node (then say how to get a real one)."""
        nodes = self.all()
        return bool(nodes) and all(n.get("kind") == "demo" for n in nodes)

    def local_candidate(self) -> dict[str, Any]:
        """Whether the local libvirtd answers but is no node yet (the panel offers it).

        The answer is cached for a while: it costs a connection.
        """
        now = time.monotonic()
        cached = self._local_check
        if cached is None or now - cached[0] > LOCAL_CHECK_INTERVAL:
            self._local_check = cached = (now, local_libvirt_answers())
        present = any(n.get("uri") == local.LOCAL_URI for n in self.all())
        return {"uri": local.LOCAL_URI, "answers": cached[1], "node_exists": present,
                "offer": cached[1] and not present}

    def add_local(self, actor: str | None = None) -> NodeRecord:
        """Add the local libvirtd (qemu:///system) as a node named "local"."""
        self._local_check = None
        state = self.local_candidate()
        if not state["offer"]:
            raise Conflict("the local libvirtd is already a node" if state["node_exists"]
                           else f"no libvirtd answers at {local.LOCAL_URI}",
                           code="already_exists" if state["node_exists"]
                           else "local_libvirt_unavailable")
        names = {n["name"] for n in self.all()}
        name = next(c for c in ("local", *(f"local-{i}" for i in range(2, 100)))
                    if c not in names)
        node: NodeRecord = self.store.insert(  # type: ignore[assignment]
            TABLE, node_record(local.LOCAL_URI, name))
        self._connect(node)
        self.events.emit("node.add", node["id"], actor=actor, name=name, uri=local.LOCAL_URI)
        return node

    # -- joined nodes ------------------------------------------------------------------
    def find(self, **equals: Any) -> NodeRecord | None:
        return self.store.find_one(TABLE, **equals)  # type: ignore[return-value]

    def add(self, node: NodeRecord) -> NodeRecord:
        """Store a node that passed its checks and connect it (see ``nodes.join``)."""
        stored: NodeRecord = self.store.insert(TABLE, node)  # type: ignore[assignment]
        try:
            self._connect(stored)
        except Exception:
            self.forget(stored["id"])
            raise
        return stored

    def forget(self, node_id: str) -> None:
        """Close a node's connection and drop its record."""
        conn = self._conns.pop(node_id, None)
        if conn is not None:
            conn.close()
        self._info.pop(node_id, None)
        self.store.delete(TABLE, node_id)

    def update(self, node_id: str, fields: dict[str, Any], user: dict[str, Any]
               ) -> dict[str, Any]:
        """Rename, set the domain type or maintenance (entering it evacuates the node)."""
        with self.store.locked():
            before = self.require(node_id)
            if "name" in fields:
                other = self.find(name=fields["name"])
                if other and other["id"] != node_id:
                    raise Conflict(f"node {fields['name']!r} already exists",
                                   code="already_exists")
            updated: NodeRecord = self.store.update(  # type: ignore[assignment]
                TABLE, node_id, fields)
        if fields.get("maintenance") and not before.get("maintenance") and self.evacuate:
            return {**self.public(updated), "task": self.evacuate(node_id, user)}
        return self.public(updated)

    def delete(self, node_id: str, actor: str | None = None) -> None:
        """Remove a node without VMs (never the last one) and its key files."""
        node = self.require(node_id)
        self.references.refuse_if_used("node", node_id, f"node {node['name']!r}",
                                       "node_has_vms")
        if self.store.count(TABLE) == 1:
            raise Conflict("the last node cannot be removed", code="last_node")
        self.forget(node_id)
        own_key = node.get("keyfile", "").endswith(f"node-{node_id}.key")
        for key in ("known_hosts", "keyfile") if own_key else ("known_hosts",):
            if node.get(key):
                Path(node[key]).unlink(missing_ok=True)  # type: ignore[literal-required]
        self.events.emit("node.delete", node_id, actor=actor, name=node["name"])

    def file_readable(self, node_id: str, path: str) -> bool:
        """Whether ``path`` is a readable file on the node (over SSH for remote nodes)."""
        node = self.require(node_id)
        if node.get("kind") != "ssh":
            return Path(path).is_file()
        with node_session(node) as client:
            try:
                ssh.run(client, ["test", "-f", path, "-a", "-r", path])
            except PanelError:
                return False
        return True

    @contextlib.contextmanager
    def forward(self, node_id: str, host: str, port: int) -> Iterator[tuple[str, int]]:
        """A local ``(host, port)`` reaching ``host:port`` as the node sees it: the address
        itself on this machine's nodes, an SSH tunnel for remote (SSH) ones."""
        node = self.require(node_id)
        if node.get("kind") != "ssh":
            yield host, port
            return
        with node_session(node) as client, tunnel.forward(client, host, port) as local_end:
            yield local_end

    def context(self, node_id: str) -> NodeHandle:
        """The node as capability plugins see it (``network.NodeContext``)."""
        node = self.require(node_id)
        return NodeHandle(node_id, node["name"], node.get("kind") != "ssh", node,
                          lambda: self.connection(node_id).get(),
                          demo=node.get("kind") == "demo")

    # -- kvm -------------------------------------------------------------------------
    def domain_type(self, node_id: str) -> str:
        return self.kvm.domain_type(self.require(node_id))

    def mark_kvm_unusable(self, node_id: str, reason: str) -> None:
        self.kvm.mark_unusable(node_id, reason)

    # -- lookups -----------------------------------------------------------------------
    def all(self) -> list[NodeRecord]:
        return self.store.all(TABLE)  # type: ignore[return-value]

    def get(self, node_id: str) -> NodeRecord | None:
        return self.store.get(TABLE, node_id)  # type: ignore[return-value]

    def require(self, node_id: str) -> NodeRecord:
        node = self.get(node_id)
        if node is None:
            raise NotFound(f"node {node_id!r} not found", code="node_not_found")
        return node

    def is_local(self, node_id: str) -> bool:
        """Whether the node is this machine's libvirtd (its files are the panel's files)."""
        node = self.get(node_id)
        return bool(node) and node.get("kind") == "local"

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

    def domain_caches(self) -> dict[str, dict[str, Any]]:
        """Each online node's domain-state cache, for views of many VMs at once."""
        return {nid: c.domains for nid, c in self._conns.items() if c.status == "online"}

    def info(self, node_id: str) -> dict[str, Any]:
        return self._info.get(node_id, {})

    def facts(self, node_id: str) -> dict[str, Any]:
        """Stored facts (OS, versions) merged with the live ones."""
        return {**(self.get(node_id) or {}).get("facts", {}), **self.info(node_id)}

    def member_facts(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, facts) of every node, for the compatibility check of a joining node."""
        return [(node["name"], self.facts(node["id"])) for node in self.all()]

    # -- views -------------------------------------------------------------------------
    def public(self, node: NodeRecord) -> dict[str, Any]:
        conn = self._conns.get(node["id"])
        out: dict[str, Any] = {k: v for k, v in node.items() if k not in SECRET_FIELDS}
        out["status"] = conn.status if conn else "offline"
        out["status_reason"] = conn.error if conn else "not connected"
        if node.get("maintenance") and out["status"] == "online":
            out["status"], out["status_reason"] = "maintenance", node.get("maintenance_reason")
        out["resources"] = dict(self._info.get(node["id"], {}))
        if conn is not None:
            states = [d.state for d in conn.domains.values()]
            out["resources"].update(domains=len(states),
                                    running=sum(1 for s in states if s == "running"))
        return out

    def view(self, node: NodeRecord, user: dict[str, Any]) -> dict[str, Any]:
        """Admins see everything; users see which nodes exist and their state."""
        public = self.public(node)
        return public if user.get("role") == "admin" else {k: public[k] for k in USER_FIELDS}

    def listing(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.view(node, user) for node in self.all()]
