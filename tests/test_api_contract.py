"""The API contract on the test-driver node: auth, roles, CSRF, errors, bad input."""

from __future__ import annotations

import pytest

from hypervisor_panel.panel import Panel
from tests.support.api import assert_error, small_template, snapshot
from tests.support.client import Client


def test_every_route_but_health_and_login_needs_authentication(anon: Client, admin: Client):
    spec = admin.get("/api/v1/openapi.json").body
    public = {(p, m) for p, ops in spec["paths"].items() for m, op in ops.items()
              if op.get("security") == []}
    assert public == {("/api/v1/health", "get"), ("/api/v1/auth/login", "post")}
    for path, ops in spec["paths"].items():
        for method in ops:
            if (path, method) in public:
                continue
            concrete = path.replace("{", "").replace("}", "")
            resp = anon.request(method.upper(), concrete, {} if method != "get" else None)
            assert_error(resp, 401)


def test_login_errors_and_bearer_tokens(anon: Client, admin: Client):
    assert_error(anon.post("/api/v1/auth/login", {"username": "admin", "password": "nope"}),
                 401, "invalid_credentials")
    assert_error(anon.post("/api/v1/auth/login", {"username": "admin"}), 422)
    bogus = Client(anon.base, token="not-a-token")
    assert_error(bogus.get("/api/v1/vms"), 401, "invalid_token")
    created = admin.post("/api/v1/tokens", {"name": "ci"})
    assert created.status == 201 and "hash" not in created.body
    api = Client(anon.base, token=created.body["token"])
    assert api.get("/api/v1/auth/me").body["name"] == "admin"
    listed = admin.get("/api/v1/tokens").body["items"]
    assert all("token" not in t and "hash" not in t for t in listed)
    assert admin.delete(f"/api/v1/tokens/{created.body['id']}").status == 204
    assert_error(api.get("/api/v1/auth/me"), 401)


def test_users_see_only_their_vms_and_admin_routes_are_forbidden(admin: Client, anon: Client):
    resp = admin.post("/api/v1/users", {"name": "alice", "password": "alice-password",
                                        "role": "user", "quota": {"vms": 1}})
    assert resp.status == 201 and "password_hash" not in resp.body
    alice = anon.login("alice", "alice-password")
    template = small_template(admin)
    admin_vm = admin.run("POST", "/api/v1/vms", {"name": "adminvm",
                                                 "vm_template": template["id"]})
    alice_vm = alice.run("POST", "/api/v1/vms", {"name": "alicevm",
                                                 "vm_template": template["id"]})
    assert [v["name"] for v in alice.get("/api/v1/vms").body["items"]] == ["alicevm"]
    assert_error(alice.get(f"/api/v1/vms/{admin_vm['result']['vm']}"), 404)
    assert_error(alice.post(f"/api/v1/vms/{admin_vm['result']['vm']}/actions/start"), 404)
    assert alice.get(f"/api/v1/vms/{alice_vm['result']['vm']}").status == 200
    assert_error(alice.post("/api/v1/vms", {"name": "second", "vm_template": template["id"]}),
                 403, "quota_exceeded")
    assert_error(alice.post("/api/v1/vm-templates", {"name": "x", "memory_mib": 64,
                                                     "vcpus": 1, "disk_gib": 1}),
                 403, "admin_only")
    assert_error(alice.get("/api/v1/users"), 403, "admin_only")
    assert_error(alice.post("/api/v1/storages", {"name": "s", "backend": "dir",
                                                 "options": {"path": "/tmp/x"}}), 403)
    assert_error(alice.post("/api/v1/vms", {"name": "k", "vm_template": template["id"],
                                            "boot": {"kernel": "/etc/shadow"}}), 403)


def test_errors_are_json_for_unknown_routes_methods_and_bodies(admin: Client):
    assert_error(admin.get("/api/v1/nope"), 404, "no_such_endpoint")
    assert_error(admin.request("PUT", "/api/v1/vms"), 405, "method_not_allowed")
    assert_error(admin.post("/api/v1/vm-templates", raw=b"{not json",
                            headers={"Content-Type": "application/json"}), 400, "invalid_json")
    assert_error(admin.post("/api/v1/vm-templates", raw=b"[1, 2]",
                            headers={"Content-Type": "application/json"}), 400, "invalid_json")
    assert_error(admin.post("/api/v1/vm-templates", raw=b"name=x",
                            headers={"Content-Type": "application/x-www-form-urlencoded"}),
                 400, "unsupported_media_type")
    assert_error(admin.get("/api/v1/vms/doesnotexist"), 404, "vm_not_found")
    assert_error(admin.get("/api/v1/tasks/doesnotexist"), 404, "task_not_found")


BAD_TEMPLATES = [
    ({"name": "t", "memory_mib": 0, "vcpus": 1, "disk_gib": 1}, 422),
    ({"name": "t", "memory_mib": "512", "vcpus": 1, "disk_gib": 1}, 422),
    ({"name": "t", "memory_mib": 512, "vcpus": 1, "disk_gib": 1, "color": "red"}, 422),
    ({"name": "<x/>", "memory_mib": 512, "vcpus": 1, "disk_gib": 1}, 422),
    ({"name": "a;rm -rf /", "memory_mib": 512, "vcpus": 1, "disk_gib": 1}, 422),
    ({"name": "t", "memory_mib": 512, "vcpus": 0, "disk_gib": 1}, 422),
    ({"name": "t", "memory_mib": 512, "vcpus": 1, "disk_gib": 10**9}, 422),
    ({"name": "small", "memory_mib": 512, "vcpus": 1, "disk_gib": 1}, 409),
]


@pytest.mark.parametrize(("body", "status"), BAD_TEMPLATES)
def test_bad_vm_templates_are_refused_and_change_nothing(admin: Client, body: dict,
                                                         status: int):
    before = snapshot(admin)
    assert_error(admin.post("/api/v1/vm-templates", body), status)
    assert snapshot(admin) == before


def test_bad_vms_are_refused_and_change_nothing(admin: Client, panel: Panel):
    template = small_template(admin)
    huge = admin.post("/api/v1/vm-templates", {"name": "huge", "memory_mib": 1024 * 1024,
                                               "vcpus": 1, "disk_gib": 1}).body
    node = admin.get("/api/v1/nodes").body["items"][0]
    storage = admin.get("/api/v1/storages").body["items"][0]
    ok = {"name": "vm1", "vm_template": template["id"]}
    cases = [
        ({**ok, "unknown": 1}, 422, "validation_error"),
        ({**ok, "name": 5}, 422, "validation_error"),
        ({**ok, "name": "x'/><evil/>"}, 422, "validation_error"),
        ({**ok, "name": "$(reboot)"}, 422, "validation_error"),
        ({**ok, "name": "a" * 100}, 422, "validation_error"),
        ({"name": "vm1"}, 422, "validation_error"),
        ({**ok, "vm_template": "missing"}, 422, "vm_template_not_found"),
        ({**ok, "node": "missing"}, 422, "node_not_found"),
        ({**ok, "storage": "missing"}, 422, "storage_not_found"),
        ({**ok, "vm_template": huge["id"], "node": node["id"]}, 422, "not_enough_memory"),
        ({**ok, "boot": {"kernel": "relative/path"}}, 422, "validation_error"),
        ({**ok, "boot": {"kernel": "/k", "cmdline": "a'<b>"}}, 422, "validation_error"),
        ({**ok, "storage": storage["id"], "start": "yes"}, 422, "validation_error"),
    ]
    before = snapshot(admin)
    tasks_before = admin.get("/api/v1/tasks").body["items"]
    domains_before = panel.nodes.connection(node["id"]).get().listDefinedDomains()
    for body, status, code in cases:
        assert_error(admin.post("/api/v1/vms", body), status, code)
    assert snapshot(admin) == before
    assert admin.get("/api/v1/tasks").body["items"] == tasks_before
    assert panel.nodes.connection(node["id"]).get().listDefinedDomains() == domains_before


def test_duplicate_vm_name_and_conflicting_operations(admin: Client):
    template = small_template(admin)
    task = admin.run("POST", "/api/v1/vms", {"name": "dup", "vm_template": template["id"]})
    vm_id = task["result"]["vm"]
    assert_error(admin.post("/api/v1/vms", {"name": "dup", "vm_template": template["id"]}),
                 409, "already_exists")
    assert_error(admin.post(f"/api/v1/vms/{vm_id}/actions/stop"), 409, "invalid_state")
    assert_error(admin.post(f"/api/v1/vms/{vm_id}/actions/fly"), 404, "no_such_endpoint")
    assert_error(admin.post(f"/api/v1/vms/{vm_id}/actions/stop", {"timeout": -1}), 422)
    assert_error(admin.delete(f"/api/v1/vms/{vm_id}?keep_disks=maybe"), 400, "bad_query")
    assert_error(admin.delete(f"/api/v1/vm-templates/{template['id']}"), 409, "template_in_use")
    storage = admin.get("/api/v1/storages").body["items"][0]
    assert_error(admin.delete(f"/api/v1/storages/{storage['id']}"), 409, "storage_in_use")


def test_storage_bad_input(admin: Client):
    before = snapshot(admin)
    for body, status in [
        ({"name": "s", "backend": "nope"}, 422),
        ({"name": "s", "backend": "dir", "options": {"path": "relative"}}, 422),
        ({"name": "s", "backend": "dir", "options": {"path": "/a/../etc"}}, 422),
        ({"name": "s", "backend": "dir", "options": {"path": "/x", "extra": 1}}, 422),
        ({"name": "default", "backend": "dir", "options": {"path": "/x"}}, 409),
        ({"name": "s;ls", "backend": "dir", "options": {"path": "/x"}}, 422),
    ]:
        assert_error(admin.post("/api/v1/storages", body), status)
    assert snapshot(admin) == before


def test_openapi_describes_the_contract(admin: Client):
    spec = admin.get("/api/v1/openapi.json").body
    assert spec["openapi"].startswith("3.")
    for path in ("/api/v1/vms", "/api/v1/vms/{vm_id}/actions/start", "/api/v1/tasks/{task_id}",
                 "/api/v1/nodes", "/api/v1/storages", "/api/v1/vm-templates", "/api/v1/plugins"):
        assert path in spec["paths"], path
    create = spec["paths"]["/api/v1/vm-templates"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["required"]
    vm_create = spec["paths"]["/api/v1/vms"]["post"]
    assert "202" in vm_create["responses"] and "200" not in vm_create["responses"]
    schema = vm_create["requestBody"]["content"]["application/json"]["schema"]
    assert {"name", "vm_template"} <= set(schema["required"])


def test_every_operation_declares_its_body_responses_and_errors(admin: Client):
    spec = admin.get("/api/v1/openapi.json").body
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            if method in ("post", "put", "patch"):
                content = op.get("requestBody", {}).get("content", {})
                schema = next(iter(content.values()), {}).get("schema")
                assert schema, f"{where} shows no request body schema"
            success = [code for code in op["responses"] if code.startswith("2")]
            assert len(success) == 1, where
            if success[0] != "204":
                assert "schema" in next(iter(op["responses"][success[0]]["content"].values()))
            errors = {code for code in op["responses"] if code[0] in "45"}
            assert "400" in errors, where
            if op.get("security") != []:
                assert "401" in errors, where
    assert spec["paths"]["/api/v1/vms"]["post"]["responses"].keys() >= {"202", "401", "422"}
    assert spec["paths"]["/api/v1/storages"]["post"]["responses"].keys() >= {"201", "409"}
    backend = spec["paths"]["/api/v1/storages"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["backend"]
    assert set(backend["enum"]) >= {"dir", "lvm", "nfs", "rbd"}
    keep = spec["paths"]["/api/v1/vms/{vm_id}"]["delete"]["parameters"][-1]
    assert keep["name"] == "keep_disks" and keep["schema"]["type"] == "boolean"


def test_answers_match_their_declared_response_schemas(admin: Client):
    import jsonschema

    task = admin.run("POST", "/api/v1/vms", {"name": "shaped",
                                             "vm_template": small_template(admin)["id"]})
    spec = admin.get("/api/v1/openapi.json").body
    ids = {"vm_id": task["result"]["vm"], "task_id": task["id"],
           "node_id": admin.get("/api/v1/nodes").body["items"][0]["id"],
           "storage_id": admin.get("/api/v1/storages").body["items"][0]["id"],
           "template_id": small_template(admin)["id"],
           "user_id": admin.get("/api/v1/auth/me").body["id"],
           "plugin_id": "storage_dir"}
    checked = 0
    for path, ops in spec["paths"].items():
        op = ops.get("get")
        if op is None or "content" not in op["responses"]["200"] or path.endswith("/content"):
            continue
        concrete = path
        for name, value in ids.items():
            concrete = concrete.replace("{" + name + "}", value)
        if "{" in concrete:
            continue
        query = "?node=" + ids["node_id"] if path.endswith("migration-check") else ""
        resp = admin.get(concrete + query)
        assert str(resp.status) in op["responses"], (path, resp)  # declared, at least
        if resp.status != 200:
            assert_error(resp, resp.status)
            continue
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.validate(resp.body, schema)
        checked += 1
    assert checked >= 20


def test_an_empty_query_value_means_the_default(admin: Client):
    task = admin.run("POST", "/api/v1/vms", {"name": "blank",
                                             "vm_template": small_template(admin)["id"]})
    deleted = admin.run("DELETE", f"/api/v1/vms/{task['result']['vm']}?keep_disks=")
    assert deleted["state"] == "succeeded" and deleted["result"]["kept_disks"] == []
    assert_error(admin.delete("/api/v1/vms/x?keep_disks=maybe"), 400, "bad_query")
    assert admin.get("/api/v1/tasks?limit=").status == 200
    assert_error(admin.get("/api/v1/tasks?limit=0"), 422)


def test_storage_refuses_a_foreign_pool_of_the_same_name(admin: Client, panel: Panel):
    node = admin.get("/api/v1/nodes").body["items"][0]
    conn = panel.nodes.connection(node["id"]).get()
    conn.storagePoolDefineXML("<pool type='dir'><name>hvp-shared</name>"
                              "<target><path>/srv/other</path></target></pool>", 0)
    clash = admin.post("/api/v1/storages", {"name": "shared", "backend": "dir",
                                            "options": {"path": "/srv/mine"}})
    assert_error(clash, 409, "pool_exists")
    assert [s["name"] for s in admin.get("/api/v1/storages").body["items"]] == ["default"]
    same = admin.post("/api/v1/storages", {"name": "shared", "backend": "dir",
                                           "options": {"path": "/srv/other"}})
    assert same.status == 201, same
