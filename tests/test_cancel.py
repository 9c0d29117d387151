"""Cancelling a running task stops it between steps and removes what it made.

The live-migration case runs on real daemons (test_cluster_real.py); here a VM create on
the test driver is held inside its ``prepare_domain`` hook while the cancel arrives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor_panel.hookspecs import hookimpl
from hypervisor_panel.panel import Panel
from hypervisor_panel.plugins import get_plugin_manager
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.server import serve_in_thread
from tests.conftest import ADMIN_PASSWORD, node_uri_for
from tests.support.api import small_template
from tests.support.client import Client


class HoldInPrepare:
    """A plugin that holds a VM create inside ``prepare_domain`` until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    @hookimpl
    def prepare_domain(self, vm, domain):
        self.entered.set()
        self.release.wait(30)


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Panel, Client, HoldInPrepare]]:
    hold = HoldInPrepare()
    panel = Panel(tmp_path / "data", pm=get_plugin_manager(extra=[hold]),
                  local_uri=node_uri_for(tmp_path),
                  default_storage_path=str(tmp_path / "images"))
    panel.start(admin_password=ADMIN_PASSWORD)
    server, port = serve_in_thread(create_app(panel))
    try:
        yield panel, Client(f"http://127.0.0.1:{port}").login("admin", ADMIN_PASSWORD), hold
    finally:
        hold.release.set()
        server.stop()
        panel.close()


def test_a_cancelled_create_removes_its_disk_domain_and_record(held):
    panel, admin, hold = held
    started = admin.post("/api/v1/vms", {"name": "halfway",
                                         "vm_template": small_template(admin)["id"]})
    assert started.status == 202, started
    task_id = started.body["task"]["id"]
    assert hold.entered.wait(10), "the create never reached prepare_domain"
    cancel = admin.post(f"/api/v1/tasks/{task_id}/actions/cancel", {})
    assert cancel.status == 200 and cancel.body["state"] == "running"
    assert any("cancel requested" in line for line in cancel.body["log"])
    hold.release.set()
    final = admin.wait_task(task_id, timeout=30)
    assert final["state"] == "cancelled", final
    assert admin.get("/api/v1/vms").body["items"] == []
    node = admin.get("/api/v1/nodes").body["items"][0]
    conn = panel.nodes.connection(node["id"]).get()
    assert "halfway" not in [d.name() for d in conn.listAllDomains()]
    storage = admin.get("/api/v1/storages").body["items"][0]
    volumes = admin.get(f"/api/v1/storages/{storage['id']}/volumes").body["items"]
    assert "halfway-disk0.qcow2" not in [v["name"] for v in volumes]
    again = admin.post(f"/api/v1/tasks/{task_id}/actions/cancel", {})
    assert again.status == 409 and again.body["error"]["code"] == "task_finished"
