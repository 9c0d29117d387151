"""The audit log against a served panel: what is recorded, what never is, who reads it.

Every state-changing call is recorded by the web dispatcher with its actor, address and
result, failed ones included; bodies are not (a login records the name it tried, never the
password); only admins read the log; the filters work; the bound holds; plugins see every
entry through ``track_event`` and one that raises never fails the request.
"""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hypervisor_panel import audit as audit_module
from hypervisor_panel.audit import DAY, AuditCall, AuditLog, AuditQuery
from hypervisor_panel.hookspecs import hookimpl
from hypervisor_panel.panel import Panel
from hypervisor_panel.store import Store
from tests.support.api import assert_error
from tests.support.client import Client

TEMPLATE = {"name": "audited", "memory_mib": 256, "vcpus": 1, "disk_gib": 1}


def entries(admin: Client, **filters: Any) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({k: str(v) for k, v in filters.items()})
    resp = admin.get(f"/api/v1/audit?{query}")
    assert resp.status == 200, resp
    assert resp.body["total"] >= len(resp.body["items"])
    return resp.body["items"]


def make_user(admin: Client, anon: Client, name: str = "alice") -> Client:
    password = f"{name}-password-1"
    resp = admin.post("/api/v1/users", {"name": name, "password": password, "role": "user"})
    assert resp.status == 201, resp
    return anon.login(name, password)


def test_create_patch_delete_are_recorded_with_actor_address_and_status(admin: Client):
    me = admin.get("/api/v1/auth/me").body
    created = admin.post("/api/v1/vm-templates", TEMPLATE)
    assert created.status == 201, created
    template_id = created.body["id"]
    assert admin.patch(f"/api/v1/vm-templates/{template_id}", {"vcpus": 2}).status == 200
    assert admin.delete(f"/api/v1/vm-templates/{template_id}").status == 204
    found = entries(admin, vm=template_id)
    assert [e["action"] for e in found] == [
        "DELETE /vm-templates/{template_id}", "PATCH /vm-templates/{template_id}",
        "POST /vm-templates"]
    assert [e["status"] for e in found] == [204, 200, 201]
    for entry in found:
        assert entry["user_id"] == me["id"] and entry["user_name"] == "admin"
        assert entry["token_kind"] == "login" and entry["token_id"]
        assert entry["address"] == "127.0.0.1"
        assert entry["ok"] is True and entry["error"] is None
        assert entry["duration_ms"] >= 0 and entry["subject"] == template_id
    delete = found[0]
    assert delete["path"] == f"/api/v1/vm-templates/{template_id}"
    assert delete["route"] == "/vm-templates/{template_id}"
    assert delete["params"] == {"template_id": template_id}
    assert found[2]["summary"] == {"name": "audited"}  # whitelisted fields only
    assert not [e for e in entries(admin, limit=1000) if e["method"] == "GET"]


def test_failed_calls_are_recorded_with_their_result(admin: Client, anon: Client):
    alice = make_user(admin, anon)
    assert_error(alice.post("/api/v1/vm-templates", TEMPLATE), 403, "admin_only")
    assert_error(admin.post("/api/v1/vm-templates", {**TEMPLATE, "vcpus": 0}), 422,
                 "validation_error")
    assert_error(anon.delete("/api/v1/vm-templates/nope"), 401)
    invalid, forbidden = entries(admin, action="POST /vm-templates", result="failed")
    assert (invalid["user_name"], invalid["status"], invalid["error"]) == \
        ("admin", 422, "validation_error")
    assert (forbidden["user_name"], forbidden["status"], forbidden["error"]) == \
        ("alice", 403, "admin_only")
    assert forbidden["ok"] is False and forbidden["address"] == "127.0.0.1"
    [unauthenticated] = entries(admin, method="DELETE", result="401")
    assert unauthenticated["user_id"] is None and unauthenticated["error"] == "unauthorized"
    assert unauthenticated["params"] == {"template_id": "nope"}


def test_login_attempts_are_recorded_without_the_password(admin: Client, anon: Client,
                                                           panel: Panel):
    secret = "Never-Store-This-Pa55word"
    assert_error(anon.post("/api/v1/auth/login", {"username": "admin", "password": secret}),
                 401, "invalid_credentials")
    form = urllib.parse.urlencode({"username": "admin", "password": secret}).encode()
    browser = urllib.request.Request(anon.base + "/login", data=form, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:  # no sign-in form token
        urllib.request.urlopen(browser, timeout=30)
    assert refused.value.code == 403
    logins = entries(admin, route="/auth/login")
    failed = [e for e in logins if not e["ok"]]
    assert [(e["status"], e["error"], e["summary"]) for e in failed] == [
        (401, "invalid_credentials", {"username": "admin"})]
    assert failed[0]["user_id"] is None and failed[0]["address"] == "127.0.0.1"
    ok = [e for e in logins if e["ok"]]  # the admin fixture's own login
    assert ok and ok[-1]["user_name"] == "admin" and ok[-1]["user_id"]
    [form_entry] = entries(admin, route="/login")
    assert (form_entry["status"], form_entry["error"]) == (403, "csrf_failed")
    assert len(entries(admin, actor="admin", result="failed")) == 2  # tried as admin
    panel.store.compact()  # the snapshot too, not only the journal
    for path in Path(panel.data_dir).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_users_cannot_read_the_audit_log(admin: Client, anon: Client):
    alice = make_user(admin, anon)
    assert_error(alice.get("/api/v1/audit"), 403, "admin_only")
    assert_error(anon.get("/api/v1/audit"), 401)
    # Only her sign-in: reading is not state-changing.
    assert [e["action"] for e in entries(admin, actor="alice")] == ["POST /auth/login"]


def test_filters(admin: Client, anon: Client):
    alice = make_user(admin, anon)
    start = time.time()
    made = admin.post("/api/v1/vm-templates", TEMPLATE).body
    assert_error(alice.post("/api/v1/vm-templates", TEMPLATE), 403)
    assert admin.delete(f"/api/v1/vm-templates/{made['id']}").status == 204
    end = time.time()
    assert {e["user_name"] for e in entries(admin, actor="alice")} == {"alice"}
    alice_id = entries(admin, actor="alice")[0]["user_id"]
    assert [(e["action"], e["status"]) for e in entries(admin, actor=alice_id)] == [
        ("POST /vm-templates", 403), ("POST /auth/login", 200)]
    assert [e["method"] for e in entries(admin, action="delete")] == ["DELETE"]
    assert [e["status"] for e in entries(admin, path="vm-templates")] == [204, 403, 201]
    assert [e["status"] for e in entries(admin, path="vm-templates", result="ok")] == \
        [204, 201]
    assert [e["status"] for e in entries(admin, path="vm-templates", result="4xx")] == [403]
    iso = datetime.fromtimestamp(start, UTC).isoformat()
    assert len(entries(admin, path="vm-templates", since=iso)) == 3
    assert entries(admin, path="vm-templates", since=end + 1) == []
    assert entries(admin, path="vm-templates", until=start - 1) == []
    assert [e["status"] for e in entries(admin, vm=made["id"])] == [204, 201]
    newest, second = entries(admin, path="vm-templates", limit=2)
    assert entries(admin, path="vm-templates", limit=1, offset=1) == [second]
    assert [e["status"] for e in entries(admin, path="vm-templates", before=second["id"])] \
        == [201]
    assert newest["status"] == 204
    assert_error(admin.get("/api/v1/audit?since=yesterday"), 400, "bad_query")
    assert_error(admin.get("/api/v1/audit?result=maybe"), 400, "bad_query")
    assert_error(admin.get("/api/v1/audit?limit=1001"), 422)
    assert_error(admin.get("/api/v1/audit?before=nosuchentry"), 400, "bad_query")


def call(n: int) -> AuditCall:
    return AuditCall(method="POST", route="/things", path="/api/v1/things", status=201,
                     subject=f"thing{n}", body={"name": f"t{n}", "password": "pw"})


def test_the_bound_is_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = Store(tmp_path / "audit.db")
    try:
        log = AuditLog(store, max_entries=5, max_days=1)
        monkeypatch.setattr(audit_module, "TRIM_EVERY", 4)  # amortised: every 4 entries
        for n in range(12):
            log.record(call(n))
            assert log.count() <= 5 + 4
        assert log.trim() == log.count() - 5
        kept, total = log.search(AuditQuery(limit=100))
        assert total == 5 and [e["subject"] for e in kept] == [f"thing{n}"
                                                              for n in range(11, 6, -1)]
        assert all(e["summary"] == {"name": e["summary"]["name"]} for e in kept)
        assert log.trim(now=time.time() + 2 * DAY) == 5  # older than max_days
        assert log.count() == 0
    finally:
        store.close()


class Recorder:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @hookimpl
    def track_event(self, panel: Any, event: dict[str, Any]) -> None:
        self.seen.append(event)


class Failing:
    @hookimpl
    def track_event(self, panel: Any, event: dict[str, Any]) -> None:
        raise RuntimeError("this plugin is broken")


def test_plugins_see_audit_entries_and_a_failing_one_never_fails_the_request(
        admin: Client, panel: Panel):
    recorder = Recorder()
    panel.pm.register(recorder, name="audit-recorder")
    panel.pm.register(Failing(), name="audit-failing")  # pluggy calls it first
    created = admin.post("/api/v1/vm-templates", TEMPLATE)
    assert created.status == 201, created
    assert_error(admin.post("/api/v1/vm-templates", TEMPLATE), 409)
    audits = [e for e in recorder.seen if e["kind"].startswith("audit.")]
    assert [(e["kind"], e["data"]["status"]) for e in audits] == [
        ("audit.post", 201), ("audit.post", 409)]
    first = audits[0]
    assert first["subject"] == created.body["id"] and first["actor"]
    assert first["data"]["action"] == "POST /vm-templates"
    assert first["data"]["address"] == "127.0.0.1"
    assert first["id"] == entries(admin, vm=created.body["id"])[0]["id"]
