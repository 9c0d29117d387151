"""Domain events keep VM state current; changes made outside the panel are flagged."""

from __future__ import annotations

import time

from hypervisor_panel.panel import Panel
from tests.support.client import Client


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition never became true")


def create(admin: Client, name: str) -> str:
    template = next(t for t in admin.get("/api/v1/vm-templates").body["items"]
                    if t["name"] == "small")
    return admin.run("POST", "/api/v1/vms", {"name": name,
                                             "vm_template": template["id"]})["result"]["vm"]


def test_state_follows_domain_events_from_outside_the_panel(admin: Client, panel: Panel):
    vm_id = create(admin, "evented")
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    conn = panel.nodes.connection(vm["node"]).get()
    dom = conn.lookupByUUIDString(vm["uuid"])
    dom.create()  # started with virsh, not through the panel
    wait_for(lambda: admin.get(f"/api/v1/vms/{vm_id}").body["state"] == "running")
    dom.suspend()
    wait_for(lambda: admin.get(f"/api/v1/vms/{vm_id}").body["state"] == "paused")
    dom.destroy()
    wait_for(lambda: admin.get(f"/api/v1/vms/{vm_id}").body["state"] == "stopped")


def test_domain_changed_outside_the_panel_is_flagged(admin: Client, panel: Panel):
    vm_id = create(admin, "drifted")
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    assert "problem" not in vm
    conn = panel.nodes.connection(vm["node"]).get()
    xml = conn.lookupByUUIDString(vm["uuid"]).XMLDesc()
    conn.defineXML(xml.replace("<vcpu placement='static'>1</vcpu>",
                               "<vcpu placement='static'>2</vcpu>"))
    flagged = wait_for(lambda: admin.get(f"/api/v1/vms/{vm_id}").body.get("problem"))
    assert "changed outside the panel" in flagged
    kinds = [e["kind"] for e in admin.get("/api/v1/events").body["items"]]
    assert "vm.domain_changed_outside" in kinds


def test_domain_removed_outside_shows_missing_and_delete_still_works(admin: Client,
                                                                      panel: Panel):
    vm_id = create(admin, "vanished")
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    panel.nodes.connection(vm["node"]).get().lookupByUUIDString(vm["uuid"]).undefine()
    wait_for(lambda: admin.get(f"/api/v1/vms/{vm_id}").body["state"] == "missing")
    listed = admin.get("/api/v1/vms").body["items"]
    assert [v["state"] for v in listed] == ["missing"]
    admin.run("DELETE", f"/api/v1/vms/{vm_id}")
    assert admin.get("/api/v1/vms").body["items"] == []


def test_demo_node_replays_vms_after_a_restart(tmp_path):
    from tests.conftest import ADMIN_PASSWORD, node_uri_for

    uri = node_uri_for(tmp_path)
    first = Panel(tmp_path / "data", local_uri=uri, default_storage_path="/demo/images")
    first.start(admin_password=ADMIN_PASSWORD)
    template = first.store.find_one("vm_templates", name="small")
    admin = first.store.find_one("users", name="admin")
    task = first.tasks.wait(first.vms.create({"name": "kept", "vm_template": template["id"]},
                                             admin)["id"])
    assert task["state"] == "succeeded", task
    first.close()
    second = Panel(tmp_path / "data", local_uri=uri)
    second.start()
    try:
        vm = second.store.find_one("vms", name="kept")
        assert second.vms.public(vm)["state"] == "stopped"
        storage = second.storages.public(second.store.all("storages")[0])
        assert all(n["state"] == "active" for n in storage["nodes"].values())
    finally:
        second.close()


def test_a_bulk_refresh_never_overwrites_a_state_set_while_it_ran(admin: Client, panel: Panel):
    vm_id = create(admin, "racing")
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    nc = panel.nodes.connection(vm["node"])
    real = nc.get()

    class SlowStats:
        """The libvirt connection, but the panel starts the VM during the bulk call."""

        def getAllDomainStats(self, flags):  # noqa: N802 - libvirt's name
            records = real.getAllDomainStats(flags)  # taken before the start
            nc.set_state(vm["uuid"], vm["domain_name"], "running")
            return records

    nc.refresh(SlowStats())
    assert nc.domains[vm["uuid"]].state == "running"
    nc.refresh()  # a later refresh reads libvirt's own (stopped) state again
    assert nc.domains[vm["uuid"]].state == "stopped"
