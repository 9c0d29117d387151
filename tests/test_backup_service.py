"""The backup service through the API, without guests: targets (secrets kept out of the store
and of every answer), schedules (cron/interval, missed runs after a restart, no overlap,
pause), retention (Proxmox keep-* rules, chains kept whole) and who may do what.

A real FTP server (pyftpdlib) for the secret handling; everything else on the test driver.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hypervisor_panel.backups import retention
from hypervisor_panel.backups.schedules import trigger_for
from hypervisor_panel.panel import Panel
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.server import serve_in_thread
from tests.conftest import ADMIN_PASSWORD, node_uri_for
from tests.support.api import assert_error
from tests.support.client import Client
from tests.support.ftpserver import FtpServer

DAY = 86400


def test_retention_keeps_the_newest_per_period_and_whole_chains():
    t0 = 1_700_000_000 - 1_700_000_000 % DAY  # midnight UTC
    items = []
    for day in range(10):  # a full each day at 01:00, an incremental at 13:00 on it
        full = {"id": f"f{day}", "created": t0 + day * DAY + 3600, "parent": None}
        inc = {"id": f"i{day}", "created": t0 + day * DAY + 13 * 3600, "parent": f"f{day}"}
        items += [full, inc]
    assert retention.to_keep(items, {}) == {b["id"] for b in items}
    assert retention.to_keep(items, {"keep_last": 1}) == {"i9", "f9"}  # its base stays
    assert retention.to_keep(items, {"keep_daily": 3}) == {"i9", "f9", "i8", "f8", "i7", "f7"}
    assert retention.to_keep(items, {"keep_last": 3}) == {"i9", "f9", "i8", "f8"}
    removed = retention.to_remove(items, {"keep_daily": 2})
    assert removed[:2] == ["i7", "f7"]  # children before their parents
    assert set(removed) == {b["id"] for b in items} - {"i9", "f9", "i8", "f8"}
    weekly = retention.to_keep(items, {"keep_weekly": 1})
    assert "i9" in weekly and len(weekly) == 2


def test_cron_and_interval_triggers_and_a_bad_cron_is_a_clear_error():
    assert trigger_for({"cron": "30 2 * * *"}).fields[5].name == "hour"
    assert trigger_for({"interval_minutes": 5, "created": 0}).interval.total_seconds() == 300
    with pytest.raises(Exception) as caught:
        trigger_for({"cron": "61 * * * *"})
    assert getattr(caught.value, "code", "") == "bad_cron"


@pytest.fixture
def served(tmp_path: Path):
    data = tmp_path / "data"
    panels: list = []

    def start() -> tuple[Panel, Client]:
        panel = Panel(data, local_uri=node_uri_for(tmp_path), default_storage_path=None)
        panel.start(admin_password=ADMIN_PASSWORD)
        srv, port = serve_in_thread(create_app(panel))
        panels.append((panel, srv))
        return panel, Client(f"http://127.0.0.1:{port}").login("admin", ADMIN_PASSWORD)

    def stop() -> None:
        panel, srv = panels.pop()
        srv.stop()
        panel.close()

    yield start, stop
    while panels:
        stop()


def test_targets_keep_secrets_out_of_the_store_and_answers(served, tmp_path: Path):
    start, _stop = served
    panel, admin = start()
    with FtpServer(tmp_path / "ftp") as ftp:
        bad = admin.post("/api/v1/backup-targets", {"name": "ftp", "backend": "ftp",
                                                     "options": ftp.options(password="wrong")})
        assert_error(bad, 422, "backup_target_error")
        assert "wrong" not in json.dumps(bad.body)
        assert admin.get("/api/v1/backup-targets").body["items"] == []
        made = admin.post("/api/v1/backup-targets", {"name": "ftp", "backend": "ftp",
                                                      "options": ftp.options()})
        assert made.status == 201, made
        assert "password" not in made.body["options"] and made.body["secrets_set"] == ["password"]
        for path in ("/api/v1/backup-targets", f"/api/v1/backup-targets/{made.body['id']}"):
            assert ftp.password not in json.dumps(admin.get(path).body)
        stored = b"".join(p.read_bytes() for p in panel.data_dir.glob("panel.db*"))
        assert stored and ftp.password.encode() not in stored
        secret = panel.data_dir / "secrets" / "backup-targets" / f"{made.body['id']}.json"
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
        # A change without the password keeps it; the check runs again.
        changed = admin.patch(f"/api/v1/backup-targets/{made.body['id']}",
                              {"options": {k: v for k, v in ftp.options().items()
                                           if k != "password"}})
        assert changed.status == 200, changed
        check = admin.post(f"/api/v1/backup-targets/{made.body['id']}/actions/check", {})
        assert check.body["ok"] is True, check
        assert admin.delete(f"/api/v1/backup-targets/{made.body['id']}").status == 204
        assert not secret.exists()


def test_users_may_not_touch_targets_backups_or_schedules(served, tmp_path: Path):
    start, _stop = served
    _panel, admin = start()
    admin.post("/api/v1/users", {"name": "bob", "password": "bob-password-1"})
    bob = Client(admin.base).login("bob", "bob-password-1")
    target = admin.post("/api/v1/backup-targets", {"name": "here", "backend": "local",
                                                    "options": {"path": str(tmp_path / "b")}})
    assert target.status == 201, target
    tid = target.body["id"]
    for method, path, body in (
            ("POST", "/api/v1/backup-targets", {"name": "x", "backend": "local",
                                                "options": {"path": str(tmp_path / "x")}}),
            ("GET", "/api/v1/backup-targets", None),
            ("POST", "/api/v1/backups", {"target": tid}),
            ("POST", "/api/v1/backup-schedules", {"name": "s", "target": tid, "cron": "0 1 * * *"}),
            ("GET", "/api/v1/backup-schedules", None),
            ("DELETE", f"/api/v1/backup-targets/{tid}", None),
            ("POST", "/api/v1/backups/abc/actions/restore", {}),
            ("DELETE", "/api/v1/backups/abc", None)):
        assert_error(bob.request(method, path, body), 403)
    assert bob.get("/api/v1/backups").body["items"] == []
    assert not (tmp_path / "x").exists()


def test_schedules_run_missed_runs_once_never_overlap_and_pause(served, tmp_path: Path):
    start, stop = served
    panel, admin = start()
    tid = admin.post("/api/v1/backup-targets", {"name": "here", "backend": "local",
                                                 "options": {"path": str(tmp_path / "b")}}
                     ).body["id"]
    assert_error(admin.post("/api/v1/backup-schedules", {"name": "bad", "target": tid,
                                                         "cron": "99 * * * *"}), 422, "bad_cron")
    assert_error(admin.post("/api/v1/backup-schedules", {"name": "both", "target": tid,
                                                         "cron": "0 1 * * *",
                                                         "interval_minutes": 5}), 422)
    made = admin.post("/api/v1/backup-schedules", {
        "name": "nightly", "target": tid, "cron": "0 1 * * *", "vms": {"mode": "none"},
        "panel": True, "retention": {"keep_last": 2}, "missed": "run_once"})
    assert made.status == 201, made
    assert made.body["next_run"] is not None and made.body["encrypted"] is False
    skip = admin.post("/api/v1/backup-schedules", {
        "name": "skipper", "target": tid, "interval_minutes": 60, "vms": {"mode": "none"},
        "missed": "skip"}).body
    assert_error(admin.delete(f"/api/v1/backup-targets/{tid}"), 409, "target_in_use")
    # The panel is down over the 01:00 run: at the next start it runs once (not "skip").
    for sid in (made.body["id"], skip["id"]):
        panel.store.update("backup_schedules", sid, {"last_fire": time.time() - 3 * DAY,
                                                      "created": time.time() - 3 * DAY})
    stop()
    panel, admin = start()
    tasks = [t for t in admin.get("/api/v1/tasks?limit=50").body["items"]
             if t["kind"] == "backup.schedule"]
    assert [t["subject"] for t in tasks] == [made.body["id"]], tasks
    final = admin.wait_task(tasks[0]["id"], timeout=60)
    assert final["state"] == "succeeded", final
    events = admin.get("/api/v1/events?limit=100").body["items"]
    assert any(e["kind"] == "backup_schedule.missed" and e["subject"] == skip["id"]
               for e in events)
    # Run now three times: retention keeps 2 panel backups; a run while one goes is refused.
    hold = threading.Event()
    original = panel.backup_taker._panel_body
    panel.backup_taker._panel_body = lambda *a: (hold.wait(30), original(*a))[1]
    first = admin.post(f"/api/v1/backup-schedules/{made.body['id']}/actions/run", {})
    assert first.status == 202, first
    assert_error(admin.post(f"/api/v1/backup-schedules/{made.body['id']}/actions/run", {}),
                 409, "schedule_running")
    hold.set()
    assert admin.wait_task(first.body["task"]["id"], timeout=60)["state"] == "succeeded"
    panel.backup_taker._panel_body = original
    again = admin.run("POST", f"/api/v1/backup-schedules/{made.body['id']}/actions/run", {},
                      timeout=60)
    assert len(again["result"]["pruned"]) == 1
    panel_backups = admin.get("/api/v1/backups?kind=panel").body["items"]
    assert len(panel_backups) == 2
    on_disk = sorted(p.name for p in (tmp_path / "b" / "panel").iterdir())
    assert on_disk == sorted(b["archive"].split("/")[1] for b in panel_backups)
    paused = admin.patch(f"/api/v1/backup-schedules/{made.body['id']}", {"paused": True})
    assert paused.body["paused"] is True and paused.body["next_run"] is None
    verify = admin.run("POST", f"/api/v1/backups/{panel_backups[0]['id']}/actions/verify", {},
                       timeout=60)
    assert verify["result"]["ok"] is True
    for backup in panel_backups:
        assert admin.delete(f"/api/v1/backups/{backup['id']}").status == 204
    for sid in (made.body["id"], skip["id"]):
        assert admin.delete(f"/api/v1/backup-schedules/{sid}").status == 204
    assert admin.delete(f"/api/v1/backup-targets/{tid}").status == 204


def test_a_fresh_install_is_brought_back_from_a_panel_backup(tmp_path: Path):
    """Panel A backs itself up (encrypted) to a folder; a fresh panel B on another data dir
    adds that folder as a target, finds the archive, restores it through the API, and after
    a restart is A: its users, templates and targets (with their secrets)."""
    folder = tmp_path / "shared-backups"

    def serve(data: Path) -> tuple[Panel, Any, Client]:
        panel = Panel(data, local_uri=node_uri_for(tmp_path), default_storage_path=None)
        panel.start(admin_password=ADMIN_PASSWORD)
        srv, port = serve_in_thread(create_app(panel))
        return panel, srv, Client(f"http://127.0.0.1:{port}").login("admin", ADMIN_PASSWORD)

    a, a_srv, admin = serve(tmp_path / "a")
    try:
        admin.post("/api/v1/users", {"name": "carol", "password": "carol-password-1"})
        admin.post("/api/v1/vm-templates", {"name": "tiny-a", "memory_mib": 64, "vcpus": 1,
                                            "disk_gib": 1})
        tid = admin.post("/api/v1/backup-targets", {"name": "shared", "backend": "local",
                                                     "options": {"path": str(folder)}}
                         ).body["id"]
        done = admin.run("POST", "/api/v1/backups", {"target": tid,
                                                    "passphrase": "a long passphrase"},
                         timeout=60)
        assert done["result"]["encrypted"] is True
    finally:
        a_srv.stop()
        a.close()
    b_data = tmp_path / "b"
    b, b_srv, admin = serve(b_data)
    try:
        tid = admin.post("/api/v1/backup-targets", {"name": "old", "backend": "local",
                                                     "options": {"path": str(folder)}}
                         ).body["id"]
        (entry,) = admin.get(f"/api/v1/backup-targets/{tid}/archives").body["items"]
        assert entry["kind"] == "panel" and entry["backup"] is None
        wrong = admin.run("POST", f"/api/v1/backup-targets/{tid}/actions/restore-panel",
                          {"archive": entry["name"], "passphrase": "not it at all"},
                          expect="failed", timeout=60)
        assert wrong["error"]["code"] == "wrong_passphrase", wrong["error"]
        staged = admin.run("POST", f"/api/v1/backup-targets/{tid}/actions/restore-panel",
                           {"archive": entry["name"], "passphrase": "a long passphrase"},
                           timeout=60)
        assert staged["result"]["restart_required"] is True
    finally:
        b_srv.stop()
        b.close()
    b, b_srv, admin = serve(b_data)
    try:
        names = {t["name"] for t in admin.get("/api/v1/vm-templates").body["items"]}
        assert "tiny-a" in names
        assert "carol" in {u["name"] for u in admin.get("/api/v1/users").body["items"]}
        assert [t["name"] for t in admin.get("/api/v1/backup-targets").body["items"]] == \
            ["shared"]
        assert Client(admin.base).login("carol", "carol-password-1").token
        kept = [p for p in tmp_path.iterdir() if p.name.startswith("b.old-")]
        assert len(kept) == 1  # B's own data was kept aside
        assert not [p for p in tmp_path.iterdir() if "pending-restore" in p.name]
    finally:
        b_srv.stop()
        b.close()
