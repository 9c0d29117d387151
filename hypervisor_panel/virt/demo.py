"""The embedded demo node: libvirt's test driver on a node file that outlives the panel.

The test driver forgets its state when its connection closes, but loads the ``<domain>``,
``<pool>`` (with ``<volume>`` children) and ``<network>`` elements of its node file. So
``DemoConnection`` writes the state back into that file, atomically, after each change it
hears of (domain lifecycle and metadata, pool and network events, ``refresh()``,
``changed()``, ``close()``), and the next open loads it: nothing is replayed.

Restore (``restore_running = True``): the panel is not the hypervisor, so a panel restart
leaves domains as a libvirtd outliving it would: running, paused, shut off or transient as
they were (with new IDs). ``restore_running = False`` acts as a host reboot instead: all shut
off, transient ones gone, autostart ones started. Pools and networks keep their active and
autostart flags (``<hvp:state>``: the driver loads every pool and network active). Not kept:
snapshots, live-only changes of a running domain (its inactive XML is saved).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import quoteattr

import libvirt

from ..errors import Unavailable
from .connection import NodeConnection, _one_line

log = logging.getLogger(__name__)

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
HVP_NS = "https://hypervisor-panel.invalid/demo-node/1"
STATE_TAG = f"{{{HVP_NS}}}state"
OBJECT_TAGS = ("domain", "pool", "network")
HEADER = "<!-- The panel's demo node: rewritten by hypervisor_panel.virt.demo. -->\n"
GONE = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_POOL,
        libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_NETWORK}
DOMAIN_XML_FLAGS = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
Deregistration = tuple[Callable[[int], Any], int]  # how to drop a pool/network callback


class DemoConnection(NodeConnection):
    """A NodeConnection on the test driver whose state survives restarts and crashes."""

    kind = "demo"
    serial_logs = False  # nothing runs, so there is no console to log
    keepalive = False  # in-process driver: the link cannot die
    restore_running = True  # see the module docstring

    def __init__(self, node_id: str, uri: str, **callbacks: Any) -> None:
        super().__init__(node_id, uri, **callbacks)
        path = unquote(urlsplit(uri).path)
        self.path: Path | None = None if path == "/default" else Path(path)
        self.save_error: str | None = None  # why the last save failed, if it did
        self._static: list[str] = []  # the node's own elements (<cpu>, <memory>...)
        self._volumes: dict[str, list[str]] = {}  # pool UUID -> volume XML (inactive pools)
        self._written: str | None = None
        self._extra: dict[libvirt.virConnect, list[Deregistration]] = {}
        self._save_lock = threading.Lock()  # one snapshot + write at a time
        self._cond = threading.Condition()
        self._wanted = self._done = 0  # changes heard of / changes saved
        self._stopping = False  # close() began: the saver thread ends
        self._saver: threading.Thread | None = None

    # -- connection hooks ------------------------------------------------------------
    def _connect(self) -> libvirt.virConnect:
        if self.path is None:
            return libvirt.open(self.uri)
        where = f"demo node file {self.path}"
        try:
            root = ET.parse(self.path).getroot()  # noqa: S314 - the panel's file
        except FileNotFoundError:
            raise Unavailable(f"{where} is missing", code="demo_node_missing") from None
        except (ET.ParseError, OSError) as exc:
            raise Unavailable(f"{where} is corrupt or unreadable ({exc}); it was left as it "
                              "is", code="demo_node_unreadable") from None
        if root.tag != "node":
            raise Unavailable(f"{where} is not a test-driver node (root <{root.tag}>)",
                              code="demo_node_unreadable")
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise Unavailable(f"{where} was refused by libvirt's test driver: "
                              f"{_one_line(exc)}", code="demo_node_unreadable") from None
        self._static = []
        for child in root:
            if child.tag not in OBJECT_TAGS and child.tag != STATE_TAG:
                child.tail = None
                self._static.append(ET.tostring(child, encoding="unicode"))
        self._restore_states(conn, root)
        with self._cond:
            if self._saver is None:
                self._saver = threading.Thread(target=self._save_loop, daemon=True,
                                               name=f"hvp-demo-save-{self.node_id}")
                self._saver.start()
        return conn

    def _restore_states(self, conn: libvirt.virConnect, root: ET.Element) -> None:
        """Apply the saved active/autostart flags the test driver cannot load itself."""
        lookup = {"domain": conn.lookupByUUIDString, "network": conn.networkLookupByUUIDString,
                  "pool": conn.storagePoolLookupByUUIDString}
        for el in root.iter(STATE_TAG):
            kind, uuid = el.get("type", ""), el.get("uuid", "")
            try:
                obj = lookup[kind](uuid)
                if el.get("autostart") == "yes":
                    obj.setAutostart(1)
                if el.get("active") == "no":
                    if kind == "pool":  # an inactive pool does not list its volumes
                        self._volumes[uuid] = [v.XMLDesc(0) for v in obj.listAllVolumes()]
                    obj.destroy()
                elif (kind == "domain" and el.get("autostart") == "yes"
                      and not self.restore_running and not obj.isActive()):
                    obj.create()  # a host reboot starts autostart domains
            except (KeyError, libvirt.libvirtError) as exc:
                log.warning("node %s: cannot restore %s %s: %s", self.node_id, kind, uuid,
                            _one_line(exc))

    def _subscribe(self, conn: libvirt.virConnect) -> list[int]:
        callback_ids = super()._subscribe(conn)
        extra: list[Deregistration] = []
        self._extra[conn] = extra
        try:
            callback_ids.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, self._on_event, None))
            for event_id in (libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE,
                             libvirt.VIR_STORAGE_POOL_EVENT_ID_REFRESH):
                extra.append((conn.storagePoolEventDeregisterAny, conn.storagePoolEventRegisterAny(
                    None, event_id, self._on_event, None)))
            extra.append((conn.networkEventDeregisterAny, conn.networkEventRegisterAny(
                None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, self._on_event, None)))
        except libvirt.libvirtError as exc:
            log.warning("node %s: pool/network events unavailable: %s", self.node_id, exc)
        return callback_ids

    def _unsubscribe(self, conn: libvirt.virConnect) -> None:
        for deregister, callback_id in self._extra.pop(conn, []):
            with contextlib.suppress(libvirt.libvirtError):
                deregister(callback_id)

    def _lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        self.changed()  # first: whoever hears of the event may flush() and find it saved
        super()._lifecycle(conn, dom, event, detail, opaque)

    def _on_event(self, *_args: Any) -> None:
        self.changed()

    def refresh(self, conn: libvirt.virConnect | None = None) -> None:
        super().refresh(conn)
        self.changed()

    def close(self) -> None:
        """Save the final state, then disconnect for good."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        conn = self._conn
        if conn is not None:
            self.save(conn)
        super().close()

    # -- saving ------------------------------------------------------------------------
    def changed(self) -> None:
        """Have the saver thread write the state soon (never blocks: event-loop safe)."""
        with self._cond:
            self._wanted += 1
            self._cond.notify_all()

    def _save_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted > self._done or self._stopping)
                if self._stopping:
                    return
                target = self._wanted
            try:
                self.save()
            except Exception:  # a bug must not end the saver: flush() would hang
                log.exception("node %s: saving the demo node failed", self.node_id)
            with self._cond:
                self._done = max(self._done, target)
                self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every change heard of so far is saved; False on timeout or error."""
        with self._cond:
            target = self._wanted
            done = self._cond.wait_for(lambda: self._done >= target or self._stopping,
                                       timeout)
        return done and self.save_error is None

    def save(self, conn: libvirt.virConnect | None = None) -> bool:
        """Write the connection's state into the node file now; False (and ``save_error``
        set, the file untouched) when that failed."""
        with self._save_lock:
            conn = conn or (None if self._stopping else self._conn)
            if conn is None or self.path is None:
                return True
            try:
                text = self._render(conn)
                if text != self._written:
                    write_atomic(self.path, text)
                    self._written = text
            except (libvirt.libvirtError, OSError, ET.ParseError, ValueError) as exc:
                self.save_error = f"cannot save the demo node to {self.path}: {_one_line(exc)}"
                log.error("node %s: %s", self.node_id, self.save_error)
                return False
            self.save_error = None
            return True

    def _render(self, conn: libvirt.virConnect) -> str:
        """The node file for the connection's current state."""
        parts, states = list(self._static), []
        for dom in conn.listAllDomains():
            with _unless_gone():
                persistent = bool(dom.isPersistent())
                if not persistent and not self.restore_running:
                    continue
                runstate = (dom.state()[0] if self.restore_running
                            else libvirt.VIR_DOMAIN_SHUTOFF)
                tags = f"<test:runstate>{runstate}</test:runstate>"
                tags += "" if persistent else "<test:transient/>"
                tags += "<test:hasmanagedsave/>" if dom.hasManagedSaveImage(0) else ""
                parts.append(_inside(dom.XMLDesc(DOMAIN_XML_FLAGS), "domain", tags))
                states.append(_state("domain", dom.UUIDString(), True, dom.autostart()))
        for pool in conn.listAllStoragePools():
            with _unless_gone():
                uuid, active = pool.UUIDString(), bool(pool.isActive())
                if active:
                    self._volumes[uuid] = [v.XMLDesc(0) for v in pool.listAllVolumes()]
                volumes = "".join(self._volumes.get(uuid, []))
                parts.append(_inside(pool.XMLDesc(0), "pool", volumes))
                states.append(_state("pool", uuid, active, pool.autostart()))
        for net in conn.listAllNetworks():
            with _unless_gone():
                parts.append(net.XMLDesc(0).strip())
                states.append(_state("network", net.UUIDString(), net.isActive(),
                                     net.autostart()))
        body = "\n".join(parts + [s for s in states if s])
        text = f"{HEADER}<node xmlns:test='{TEST_NS}' xmlns:hvp='{HVP_NS}'>\n{body}\n</node>\n"
        ET.fromstring(text)  # noqa: S314 - never write what libvirt could not read back
        return text


@contextlib.contextmanager
def _unless_gone() -> Iterator[None]:
    """Skip an object deleted while the state is read (its own event saves again); any
    other error fails the save, so a partial state is never written."""
    try:
        yield
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in GONE:
            raise


def _inside(xml: str, tag: str, inner: str) -> str:
    """``xml`` (one ``<tag>`` element) with ``inner`` added before its closing tag."""
    xml = xml.strip()
    end = xml.rfind(f"</{tag}>")
    if end < 0:
        raise ValueError(f"unexpected {tag} XML from libvirt: {xml[:60]!r}")
    return xml[:end] + inner + xml[end:]


def _state(kind: str, uuid: str, active: Any, autostart: Any) -> str:
    """An ``<hvp:state>`` element, or "" when the flags are the test driver's defaults."""
    if active and not autostart:
        return ""
    flags = "" if active else " active='no'"
    flags += " autostart='yes'" if autostart else ""
    return f"<hvp:state type='{kind}' uuid={quoteattr(uuid)}{flags}/>"


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new file, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def demo_uri(data_dir: Path) -> str:
    """A test-driver URI on the data directory's demo node file (the shipped one on first use)."""
    target = data_dir / "demo-node.xml"
    if not target.exists():
        shipped = resources.files("hypervisor_panel") / "data" / "demo-node.xml"
        write_atomic(target, shipped.read_text(encoding="utf-8"))
    return f"test://{target}"


def is_demo_uri(uri: str) -> bool:
    """Whether ``uri`` is a local test-driver node (the demo node, or a test's node)."""
    parts = urlsplit(uri)
    return parts.scheme == "test" and not parts.netloc


def connection_for(node_id: str, uri: str, **callbacks: Any) -> NodeConnection:
    """A DemoConnection for a local test-driver URI, a NodeConnection for anything else."""
    return (DemoConnection if is_demo_uri(uri) else NodeConnection)(node_id, uri, **callbacks)
