"""The domain type on each kind of host, forced on a second, real libvirtd.

Machines of this kind differ in how KVM fails (ENVIRONMENT.md): (a) the QEMU user cannot
open /dev/kvm, or (b) it can, and then a guest with the host-model CPU dies at start, or
(on other machines) KVM runs guests slower than emulation. Each test forces one case with
``libvirtd2.sh`` (what the daemon sees as /dev/kvm: masked, an openable KVM device, or a
device that opens but is not KVM) and boots a real TCG guest through the API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from hypervisor_panel.panel import Panel
from hypervisor_panel.virt.kvm_probe import PROBE_PREFIX, ProbeResult
from tests.support.client import Client
from tests.support.cluster import (
    remove_dir,
    set_kvm,
    short_tempdir,
    start_libvirtd2,
    stop_libvirtd2,
)
from tests.support.guest import MARKER, build_guest_assets
from tests.support.realvirt import REPO_ROOT, served_panel, wait_for_serial

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/dev/kvm").exists(),
                       reason="forcing a KVM case needs a /dev/kvm to bind over"),
]


@pytest.fixture
def daemon(request: pytest.FixtureRequest) -> Iterator[dict]:
    """A second libvirtd whose /dev/kvm is ``request.param`` (mask | open)."""
    root = short_tempdir("hvpk-")
    try:
        d2 = start_libvirtd2(root, kvm=request.param)
        (root / "images").mkdir()
        yield {"d2": d2, "dir": root}
    finally:
        stop_libvirtd2(root)
        remove_dir(root)


def _setup(panel: Panel, admin: Client, images: Path) -> dict:
    storage = admin.post("/api/v1/storages", {"name": "kvmcase", "backend": "dir",
                                              "options": {"path": str(images)}})
    assert storage.status == 201, storage
    template = admin.post("/api/v1/vm-templates", {"name": "tiny", "memory_mib": 128,
                                                   "vcpus": 1, "disk_gib": 1})
    assert template.status == 201, template
    node = admin.get("/api/v1/nodes").body["items"][0]
    return {"storage": storage.body["id"], "template": template.body["id"], "node": node}


def _create(admin: Client, ids: dict, name: str, start: bool) -> dict:
    assets = build_guest_assets(REPO_ROOT / ".cache" / "guest")
    task = admin.run("POST", "/api/v1/vms", {
        "name": name, "vm_template": ids["template"], "storage": ids["storage"],
        "boot": {"kernel": str(assets.kernel), "initrd": str(assets.initrd),
                 "cmdline": "console=ttyS0 quiet"},
        "start": start,
    }, timeout=180)
    return admin.get(f"/api/v1/vms/{task['result']['vm']}").body


def _wait_verdict(admin: Client, node_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        node = admin.get(f"/api/v1/nodes/{node_id}").body
        if node.get("kvm_probe") or time.monotonic() > deadline:
            assert node.get("kvm_probe"), f"no kvm verdict after {timeout} s: {node}"
            return node
        time.sleep(0.5)


@pytest.mark.parametrize("daemon", ["mask"], indirect=True)
def test_qemu_user_cannot_open_kvm_forced_guests_get_tcg(daemon: dict, tmp_path: Path):
    d2 = daemon["d2"]
    with served_panel(tmp_path / "data", d2.uri) as (panel, admin):
        ids = _setup(panel, admin, daemon["dir"] / "images")
        assert "kvm" not in ids["node"]["resources"]["domain_types"]
        vm = _create(admin, ids, "case-a", start=True)
        assert vm["domain_type"] == "qemu" and vm["state"] == "running"
        wait_for_serial(d2.serial_log_path("case-a"), MARKER, timeout=90)
        assert admin.get(f"/api/v1/nodes/{ids['node']['id']}").body.get("kvm_probe") is None


@pytest.mark.parametrize("daemon", ["open"], indirect=True)
def test_kvm_offered_but_unfit_forced_probe_says_so_and_is_kept(daemon: dict,
                                                                 tmp_path: Path):
    d2 = daemon["d2"]
    with served_panel(tmp_path / "data", d2.uri) as (panel, admin):
        ids = _setup(panel, admin, daemon["dir"] / "images")
        assert "kvm" in ids["node"]["resources"]["domain_types"]
        node = _wait_verdict(admin, ids["node"]["id"])
        verdict = node["kvm_probe"]
        print("kvm verdict:", verdict)
        assert verdict["reason"] and node["kvm_usable"] is verdict["usable"]
        vm = _create(admin, ids, "case-b", start=True)
        # On machines of this kind KVM cannot run guests; where it really can, it is used.
        assert vm["domain_type"] == ("kvm" if verdict["usable"] else "qemu"), verdict
        assert vm["state"] == "running"
        wait_for_serial(d2.serial_log_path("case-b"), MARKER, timeout=120)
        raw = libvirt.open(d2.uri)
        try:
            assert not [d for d in raw.listAllDomains() if d.name().startswith(PROBE_PREFIX)]
            # A panel killed during its probe leaves a probe domain behind, paused.
            leftover = raw.createXML(
                "<domain type='qemu'><name>hvp-kvm-probe-leftover</name>"
                "<memory unit='MiB'>16</memory><os><type>hvm</type></os></domain>",
                libvirt.VIR_DOMAIN_START_PAUSED)
            assert leftover.isActive()
        finally:
            raw.close()
    # The next start keeps the saved verdict (no new probe) and removes the leftover.
    with served_panel(tmp_path / "data", d2.uri) as (panel, admin):
        again = admin.get(f"/api/v1/nodes/{ids['node']['id']}").body
        assert again["kvm_probe"]["time"] == verdict["time"]
        raw = libvirt.open(d2.uri)
        try:
            names = [d.name() for d in raw.listAllDomains()]
        finally:
            raw.close()
        assert "hvp-kvm-probe-leftover" not in names and "case-b" in names


@pytest.mark.parametrize("daemon", ["open"], indirect=True)
def test_kvm_failing_at_start_forced_falls_back_to_tcg_once(daemon: dict, tmp_path: Path):
    d2 = daemon["d2"]
    with served_panel(tmp_path / "data", d2.uri) as (panel, admin):
        ids = _setup(panel, admin, daemon["dir"] / "images")
        node_id = ids["node"]["id"]
        _wait_verdict(admin, node_id)
        # A verdict saved when KVM still worked (then the host changed under the panel).
        panel.nodes.kvm.record(node_id, ProbeResult(True, "KVM worked when probed"))
        vm = _create(admin, ids, "case-c", start=False)
        assert vm["domain_type"] == "kvm"
        set_kvm(daemon["dir"], "broken")  # /dev/kvm now opens but is not KVM
        task = admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/start", timeout=120)
        assert task["state"] == "succeeded", task
        assert any("retrying with emulation" in line for line in task["log"]), task["log"]
        vm = admin.get(f"/api/v1/vms/{vm['id']}").body
        assert vm["domain_type"] == "qemu" and vm["state"] == "running"
        node = admin.get(f"/api/v1/nodes/{node_id}").body
        assert node["kvm_usable"] is False and node["kvm_probe"]["reason"]
        print("fallback reason:", node["kvm_probe"]["reason"])
        events = admin.get("/api/v1/events").body["items"]
        assert any(e["kind"] == "node.kvm_unusable" and e["subject"] == node_id
                   for e in events)
        wait_for_serial(d2.serial_log_path("case-c"), MARKER, timeout=90)
        raw = libvirt.open(d2.uri)
        try:
            assert raw.lookupByName("case-c").XMLDesc().startswith("<domain type='qemu'")
        finally:
            raw.close()
