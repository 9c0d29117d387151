"""The demo node (virt/demo.py) keeps its state in its node file, across restarts and crashes.

Fast tier: libvirt's test driver only, each test on its own copy of tests/data/test-node.xml.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from hypervisor_panel.virt import demo
from hypervisor_panel.virt.connection import NodeConnection
from hypervisor_panel.virt.demo import DemoConnection, connection_for, demo_uri

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
META_NS = "http://example.com/hvp-test"
INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE


def domain_xml(name: str) -> str:
    return (f"<domain type='test'><name>{name}</name><memory>1024</memory>"
            f"<os><type>hvm</type></os></domain>")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition never became true")


@pytest.fixture
def node_file(tmp_path: Path) -> Path:
    copy = tmp_path / "node.xml"
    shutil.copyfile(DATA / "test-node.xml", copy)
    return copy


@pytest.fixture
def opened(node_file: Path) -> Iterator[Callable[..., DemoConnection]]:
    """Open DemoConnections on the test's node file; every one is closed at the end."""
    made: list[DemoConnection] = []

    def open_one(cls: type[DemoConnection] = DemoConnection, **callbacks: Any):
        nc = cls("demo", f"test://{node_file}", **callbacks)
        assert nc.open(), nc.error
        made.append(nc)
        return nc

    yield open_one
    for nc in made:
        nc.close()


def populate(nc: DemoConnection, tmp_path: Path) -> dict[str, Any]:
    """A stopped domain with metadata, a running one, a dir pool with a volume and its clone,
    a started network; what they looked like."""
    conn = nc.get()
    stopped = conn.defineXML(domain_xml("stopped"))
    stopped.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, "<note>kept</note>", "t",
                        META_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    running = conn.defineXML(domain_xml("running"))
    running.create()
    pool = conn.storagePoolDefineXML(
        f"<pool type='dir'><name>images</name><target><path>{tmp_path / 'images'}</path>"
        "</target></pool>")
    pool.create()
    base = pool.createXML("<volume><name>base.qcow2</name><capacity>1048576</capacity>"
                          "</volume>")
    pool.createXMLFrom("<volume><name>clone.qcow2</name><capacity>1048576</capacity>"
                       "</volume>", base)
    net = conn.networkDefineXML("<network><name>lan</name><bridge name='hvp0'/></network>")
    net.create()
    return {
        "domains": {d.UUIDString(): d.XMLDesc(INACTIVE) for d in (stopped, running)},
        "stopped": stopped.UUIDString(), "running": running.UUIDString(),
        "pool": (pool.UUIDString(), pool.XMLDesc(0)),
        "volumes": {v.name(): v.XMLDesc(0) for v in pool.listAllVolumes()},
        "network": (net.UUIDString(), net.XMLDesc(0)),
    }


def assert_restored(conn: libvirt.virConnect, before: dict[str, Any]) -> None:
    domains = {d.UUIDString(): d for d in conn.listAllDomains()}
    assert set(domains) == set(before["domains"])
    for uuid, xml in before["domains"].items():
        assert domains[uuid].XMLDesc(INACTIVE) == xml
    stopped = domains[before["stopped"]]
    assert stopped.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS) == "<note>kept</note>"
    assert stopped.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert domains[before["running"]].state()[0] == libvirt.VIR_DOMAIN_RUNNING
    pool = conn.storagePoolLookupByUUIDString(before["pool"][0])
    assert pool.isActive() and pool.XMLDesc(0) == before["pool"][1]
    assert {v.name(): v.XMLDesc(0) for v in pool.listAllVolumes()} == before["volumes"]
    net = conn.networkLookupByUUIDString(before["network"][0])
    assert net.isActive() and net.XMLDesc(0) == before["network"][1]


def test_everything_is_back_after_close_and_reopen(opened, tmp_path: Path):
    first = opened()
    before = populate(first, tmp_path)
    first.close()
    second = opened()
    assert_restored(second.get(), before)
    assert {u: s.state for u, s in second.domains.items()} == {
        before["stopped"]: "stopped", before["running"]: "running"}


def test_flags_the_test_driver_cannot_load_are_kept(opened, tmp_path: Path):
    """Inactive pools (with their volumes) and networks stay inactive; autostart stays."""
    first = opened()
    conn = first.get()
    conn.defineXML(domain_xml("auto")).setAutostart(1)
    pool = conn.storagePoolDefineXML(
        f"<pool type='dir'><name>idle</name><target><path>{tmp_path}</path></target></pool>")
    pool.create()
    pool.createXML("<volume><name>kept</name><capacity>1024</capacity></volume>")
    first.changed()  # volumes make no libvirt event: the panel says so
    assert first.flush()
    pool.destroy()
    conn.networkDefineXML("<network><name>idle</name></network>").setAutostart(1)
    first.close()
    conn = opened().get()
    assert conn.lookupByName("auto").autostart() == 1
    pool = conn.storagePoolLookupByName("idle")
    assert not pool.isActive()
    pool.create()
    assert [v.name() for v in pool.listAllVolumes()] == ["kept"]
    net = conn.networkLookupByName("idle")
    assert not net.isActive() and net.autostart() == 1


def test_host_reboot_semantics_when_running_domains_are_not_restored(opened):
    class Rebooting(DemoConnection):
        restore_running = False

    first = opened(Rebooting)
    conn = first.get()
    conn.defineXML(domain_xml("was-running")).create()
    auto = conn.defineXML(domain_xml("autostart"))
    auto.setAutostart(1)
    conn.createXML(domain_xml("transient"))
    first.close()
    conn = opened(Rebooting).get()
    states = {d.name(): d.state()[0] for d in conn.listAllDomains()}
    assert states == {"was-running": libvirt.VIR_DOMAIN_SHUTOFF,
                      "autostart": libvirt.VIR_DOMAIN_RUNNING}


def test_a_change_survives_a_crash_without_close(node_file: Path, opened, tmp_path: Path):
    """A process that never closes its connection is killed after the events were handled."""
    script = textwrap.dedent(f"""
        import sys, threading, libvirt
        from hypervisor_panel.virt.demo import DemoConnection
        heard = threading.Event()
        nc = DemoConnection("demo", {f"test://{node_file}"!r},
                            on_domain_event=lambda *args: heard.set())
        assert nc.open(), nc.error
        conn = nc.get()
        conn.defineXML({domain_xml("survivor")!r}).create()
        pool = conn.storagePoolDefineXML(
            "<pool type='dir'><name>p</name><target><path>{tmp_path}</path></target></pool>")
        pool.create()
        pool.createXML("<volume><name>v</name><capacity>1024</capacity></volume>")
        nc.changed()  # a volume makes no libvirt event
        assert heard.wait(10) and nc.flush(), nc.save_error
        print("saved", flush=True)
        threading.Event().wait()
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             text=True, env=env, cwd=ROOT)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "saved"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    conn = opened().get()
    assert conn.lookupByName("survivor").state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert [v.name() for v in conn.storagePoolLookupByName("p").listAllVolumes()] == ["v"]


def test_events_save_without_close_in_process(opened):
    heard = threading.Event()
    first = opened(on_domain_event=lambda *args: heard.set())
    uuid = first.get().defineXML(domain_xml("evented")).UUIDString()
    assert heard.wait(10) and first.flush()
    second = opened()  # the first one is still open: only its saves reached the file
    assert second.get().lookupByUUIDString(uuid).name() == "evented"


def test_a_failed_write_leaves_the_old_file_whole(opened, node_file: Path, monkeypatch):
    heard = threading.Event()
    nc = opened(on_domain_event=lambda *args: heard.set())
    nc.get().defineXML(domain_xml("saved"))
    assert heard.wait(10) and nc.flush()
    before = node_file.read_bytes()

    def disk_full(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(demo.os, "replace", disk_full)
    heard.clear()
    nc.get().defineXML(domain_xml("unsaved"))
    assert heard.wait(10)
    assert not nc.flush()  # the saver's write failed, and says so
    assert not nc.save()
    assert "No space left on device" in (nc.save_error or "")
    assert str(node_file) in (nc.save_error or "")
    assert node_file.read_bytes() == before
    assert [p.name for p in node_file.parent.iterdir()] == ["node.xml"]  # no temp file left
    monkeypatch.undo()
    assert nc.save() and nc.save_error is None
    assert b"unsaved" in node_file.read_bytes()


def test_a_reader_never_sees_a_half_written_file(opened, node_file: Path):
    nc = opened()
    done = threading.Event()

    def churn() -> None:
        conn = nc.get()
        for i in range(150):
            conn.defineXML(domain_xml(f"d{i}")).create()
            nc.changed()
        done.set()

    threading.Thread(target=churn, daemon=True).start()
    reads = 0
    while not done.is_set() or reads < 20:
        ET.fromstring(node_file.read_bytes())  # noqa: S314 - a test's own file
        reads += 1
    assert nc.flush()
    assert node_file.read_text().count("<domain ") == 150


@pytest.mark.parametrize("content, message", [
    (None, "is missing"),
    ("<node><cpu>", "is corrupt"),
    ("<nodes/>", "is not a test-driver node"),
    ("<node><domain type='test'><name>x</name></domain></node>", "refused by libvirt"),
])
def test_a_missing_or_corrupt_file_is_reported_and_left_alone(node_file: Path,
                                                             content: str | None,
                                                             message: str):
    if content is None:
        node_file.unlink()
    else:
        node_file.write_text(content)
    nc = DemoConnection("demo", f"test://{node_file}")
    try:
        assert not nc.open()
        assert nc.status == "offline"
        assert message in (nc.error or "") and str(node_file) in (nc.error or "")
        with pytest.raises(Exception, match=message):
            nc.get()
        assert (node_file.read_text() if node_file.exists() else None) == content  # as it was
    finally:
        nc.close()


def test_demo_uri_copies_the_shipped_node_once(tmp_path: Path):
    uri = demo_uri(tmp_path)
    path = tmp_path / "demo-node.xml"
    assert uri == f"test://{path}" and "<memory>" in path.read_text()
    path.write_text("<node/>")
    assert demo_uri(tmp_path) == uri and path.read_text() == "<node/>"


def test_connection_for_picks_the_class_and_its_flags(tmp_path: Path):
    nc = connection_for("n", f"test://{tmp_path}/node.xml", on_status=None)
    assert isinstance(nc, DemoConnection)
    assert (nc.kind, nc.serial_logs, nc.keepalive) == ("demo", False, False)
    assert isinstance(connection_for("n", f"test://{tmp_path}/other.xml"), DemoConnection)
    for uri in ("qemu:///system", "qemu+ssh://root@h/system", "test+tcp://h/x.xml"):
        real = connection_for("n", uri)
        assert type(real) is NodeConnection
        assert (real.kind, real.serial_logs, real.keepalive) == ("libvirt", True, True)
