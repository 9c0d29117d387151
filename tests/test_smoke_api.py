from tests.support.client import Client


def test_health_is_public(anon: Client):
    resp = anon.get("/api/v1/health")
    assert resp.status == 200
    assert resp.body["status"] == "ok"
    assert resp.body["nodes"] == {"total": 1, "online": 1}


def test_vm_lifecycle_on_test_driver(admin: Client):
    templates = admin.get("/api/v1/vm-templates").body["items"]
    small = next(t for t in templates if t["name"] == "small")
    task = admin.run("POST", "/api/v1/vms", {"name": "web1", "vm_template": small["id"]})
    vm_id = task["result"]["vm"]
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    assert vm["state"] == "stopped"
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/start")
    assert admin.get(f"/api/v1/vms/{vm_id}").body["state"] == "running"
    again = admin.post(f"/api/v1/vms/{vm_id}/actions/start")
    assert again.status == 409
    admin.run("POST", f"/api/v1/vms/{vm_id}/actions/stop", {"force": True})
    assert admin.get(f"/api/v1/vms/{vm_id}").body["state"] == "stopped"
    admin.run("DELETE", f"/api/v1/vms/{vm_id}")
    assert admin.get(f"/api/v1/vms/{vm_id}").status == 404


def test_json_answers_with_non_string_keys_still_serialise():
    from hypervisor_panel.web.glue import json_response

    assert json_response(200, {"a": {1: "one"}}) == b'{"a":{"1":"one"}}'
