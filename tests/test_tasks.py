"""Tasks: persisted state, per-object locks, interrupted tasks after a restart, rollback."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hypervisor_panel.errors import Conflict, Invalid
from hypervisor_panel.panel import Panel
from hypervisor_panel.store import Store
from hypervisor_panel.tasks import TaskManager
from tests.conftest import ADMIN_PASSWORD, node_uri_for
from tests.support.client import Client


def test_task_records_progress_log_result_and_errors(tmp_path: Path):
    tasks = TaskManager(Store(tmp_path / "db.json"))

    def body(ctx):
        ctx.progress(40, "half way")
        return {"answer": 42}

    done = tasks.wait(tasks.submit("demo", body, title="demo")["id"])
    assert done["state"] == "succeeded" and done["progress"] == 100
    assert done["result"] == {"answer": 42} and done["log"][0].endswith("half way")

    def fails(ctx):
        raise Invalid("the disk does not fit", code="no_space")

    failed = tasks.wait(tasks.submit("demo", fails, title="fails")["id"])
    assert failed["state"] == "failed"
    assert failed["error"] == {"code": "no_space", "message": "the disk does not fit"}

    def crashes(ctx):
        raise RuntimeError("boom\nsecond line")

    crashed = tasks.wait(tasks.submit("demo", crashes, title="crashes")["id"])
    assert crashed["error"] == {"code": "task_failed", "message": "boom"}
    tasks.shutdown()


def test_a_second_operation_on_a_locked_object_gets_409(tmp_path: Path):
    tasks = TaskManager(Store(tmp_path / "db.json"))
    release = threading.Event()
    first = tasks.submit("slow", lambda ctx: release.wait(10), title="slow", lock_key="vm:1")
    with pytest.raises(Conflict) as err:
        tasks.submit("other", lambda ctx: None, title="other", lock_key="vm:1")
    assert err.value.status == 409 and first["id"] in err.value.message
    other = tasks.submit("free", lambda ctx: None, title="free", lock_key="vm:2")
    assert tasks.wait(other["id"])["state"] == "succeeded"
    release.set()
    assert tasks.wait(first["id"])["state"] == "succeeded"
    again = tasks.submit("again", lambda ctx: None, title="again", lock_key="vm:1")
    assert tasks.wait(again["id"])["state"] == "succeeded"
    tasks.shutdown()


def test_tasks_running_at_a_crash_are_failed_interrupted_after_restart(tmp_path: Path):
    store = Store(tmp_path / "data" / "panel.db")
    store.insert("tasks", {"id": "t1", "name": "Create VM x", "kind": "vm.create",
                           "state": "running", "progress": 30, "log": [], "error": None,
                           "owner": None, "created": 1.0})
    store.insert("tasks", {"id": "t2", "name": "queued", "kind": "vm.start",
                           "state": "queued", "progress": 0, "log": [], "error": None,
                           "owner": None, "created": 2.0})
    store.insert("tasks", {"id": "t3", "name": "done", "kind": "vm.start",
                           "state": "succeeded", "progress": 100, "log": [], "error": None,
                           "owner": None, "created": 3.0})
    store.close()
    panel = Panel(tmp_path / "data", local_uri=node_uri_for(tmp_path),
                  default_storage_path=None)
    panel.start(admin_password=ADMIN_PASSWORD)
    try:
        assert panel.tasks.get("t1")["state"] == "failed"
        assert panel.tasks.get("t1")["error"]["code"] == "interrupted"
        assert panel.tasks.get("t2")["state"] == "failed"
        assert panel.tasks.get("t3")["state"] == "succeeded"
    finally:
        panel.close()


def test_failed_vm_creation_rolls_back(admin: Client, panel: Panel):
    template = next(t for t in admin.get("/api/v1/vm-templates").body["items"]
                    if t["name"] == "small")
    storage = admin.get("/api/v1/storages").body["items"][0]
    node = admin.get("/api/v1/nodes").body["items"][0]
    backend = panel.storages.backend(panel.storages.require(storage["id"]))
    conn = panel.nodes.connection(node["id"]).get()
    backend.create_volume(conn, "clash-disk0.qcow2", 1024**3)  # already there
    resp = admin.post("/api/v1/vms", {"name": "clash", "vm_template": template["id"]})
    assert resp.status == 202
    task = admin.wait_task(resp.body["task"]["id"])
    assert task["state"] == "failed"
    assert task["error"]["code"] == "volume_exists" and "clash-disk0" in task["error"]["message"]
    assert admin.get("/api/v1/vms").body["items"] == []
    assert "clash" not in conn.listDefinedDomains()
    assert backend.pool(conn).listVolumes() == ["clash-disk0.qcow2"]  # not ours: kept
