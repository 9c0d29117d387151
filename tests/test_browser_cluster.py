"""The cluster UI in a real Chromium: nodes page (status, maintenance, add-node flow) and the
VM page's migrate dialog, on a panel with TWO libvirt test-driver nodes.

Real SSH joins and real migrations are tested elsewhere (test_cluster_real.py); here the
browser side: what is shown, what is offered and what is impossible.
"""
# ruff: noqa: F811

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import (  # noqa: F401  (fixtures are used by name)
    browser_context_args,
    browser_type_launch_args,
    js_errors,
    screenshot,
    sign_in,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def cluster_page(two: dict, page: Page, js_errors: list[str]) -> Page:
    """Signed in as admin (the server fixture first: it outlives the page)."""
    sign_in(page, two["server"])
    expect(page).to_have_url(re.compile(r"/$"))
    return page


def node_row(page: Page, name: str):
    return page.locator(f'[data-testid="node-row"][data-name="{name}"]')


def test_nodes_page_lists_both_nodes_online(two: dict, cluster_page: Page):
    page = cluster_page
    page.goto(f"{two['server']}/nodes")
    expect(page.get_by_test_id("node-row")).to_have_count(2)
    for name in ("demo", "b"):
        row = node_row(page, name)
        expect(row.get_by_test_id("node-status")).to_have_text("online")
        expect(row).to_contain_text("4 ×")  # resources: the test node's CPUs
        expect(row.get_by_test_id("node-maintenance")).to_have_text("Maintenance…")
        expect(row.get_by_test_id("node-remove")).to_be_enabled()
    expect(page.get_by_test_id("alert")).to_be_hidden()


def test_maintenance_toggle_shows_the_status_and_back(two: dict, cluster_page: Page):
    page = cluster_page
    admin, ids = two["admin"], two["ids"]
    page.goto(f"{two['server']}/nodes")
    row = node_row(page, "b")
    status = row.get_by_test_id("node-status")
    expect(status).to_have_text("online")
    page.once("dialog", lambda dialog: dialog.accept("new RAM"))
    row.get_by_test_id("node-maintenance").click()
    expect(status).to_have_text("maintenance")
    expect(status).to_have_attribute("title", "new RAM")
    expect(row.get_by_test_id("node-status-reason")).to_contain_text("new RAM")
    expect(row.get_by_test_id("node-maintenance")).to_have_text("End maintenance")
    expect(page.get_by_test_id("notice")).to_contain_text("is in maintenance")  # evacuated
    node = admin.get(f"/api/v1/nodes/{ids['b']}").body
    assert (node["status"], node["maintenance"]) == ("maintenance", True)
    assert node_row(page, "demo").get_by_test_id("node-status").inner_text() == "online"

    row.get_by_test_id("node-maintenance").click()  # back: no prompt
    expect(status).to_have_text("online")
    expect(row.get_by_test_id("node-maintenance")).to_have_text("Maintenance…")
    assert admin.get(f"/api/v1/nodes/{ids['b']}").body["status"] == "online"

    # Cancelling the reason prompt changes nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_test_id("node-maintenance").click()
    page.wait_for_timeout(300)
    expect(status).to_have_text("online")
    assert admin.get(f"/api/v1/nodes/{ids['b']}").body["maintenance"] is False
    expect(page.get_by_test_id("alert")).to_be_hidden()


def test_removing_the_last_node_or_a_node_with_vms_shows_the_409(two: dict,
                                                                  cluster_page: Page):
    page = cluster_page
    admin, ids = two["admin"], two["ids"]
    small = next(t["id"] for t in admin.get("/api/v1/vm-templates").body["items"]
                 if t["name"] == "small")
    admin.run("POST", "/api/v1/vms", {"name": "pinned", "vm_template": small,
                                      "node": ids["b"]})
    page.goto(f"{two['server']}/nodes")
    page.on("dialog", lambda dialog: dialog.accept())
    node_row(page, "b").get_by_test_id("node-remove").click()
    alert = page.get_by_test_id("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Remove node b")
    expect(alert.get_by_test_id("alert-code")).to_have_text("node_has_vms")
    expect(page.get_by_test_id("node-row")).to_have_count(2)


def test_host_key_fetch_against_a_closed_port_shows_a_clear_error(two: dict,
                                                                   cluster_page: Page):
    page = cluster_page
    page.goto(f"{two['server']}/nodes")
    form = page.get_by_test_id("add-node-form")
    submit = form.get_by_test_id("add-node-submit")
    expect(submit).to_be_disabled()
    form.get_by_test_id("node-host").fill("127.0.0.1")
    form.get_by_test_id("node-port").fill("1")
    form.get_by_test_id("node-name").fill("c")
    form.get_by_test_id("node-auth-password").check()
    expect(form.get_by_test_id("node-password-field")).to_contain_text("never stored")
    form.get_by_test_id("node-password").fill("secret")
    form.get_by_test_id("fetch-host-key").click()
    error = form.get_by_test_id("host-key-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Could not read the host key")
    expect(error.get_by_test_id("host-key-error-code")).to_have_text("ssh_unreachable")
    alert = page.get_by_test_id("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("127.0.0.1:1")
    expect(alert.get_by_test_id("alert-code")).to_have_text("ssh_unreachable")
    expect(form.get_by_test_id("host-key")).to_be_hidden()
    expect(form.get_by_test_id("host-key-confirm")).to_be_hidden()
    expect(submit).to_be_disabled()
    expect(form.get_by_test_id("add-node-hint")).to_contain_text("confirm the host key")
    # Enter in the form cannot submit either: no task is started.
    form.get_by_test_id("node-name").press("Enter")
    page.wait_for_timeout(300)
    assert not [t for t in two["admin"].get("/api/v1/tasks").body["items"]
                if t["kind"] == "node.add"]
    expect(page.get_by_test_id("add-node-task")).to_be_hidden()
    page.get_by_test_id("add-node").scroll_into_view_if_needed()
    shot = screenshot(page, "nodes-add-host-key-error.png")
    assert shot.stat().st_size > 10_000


def test_add_node_needs_a_confirmed_fingerprint_and_a_host_change_voids_it(
        two: dict, cluster_page: Page):
    """The key box and the confirmation flow, with the host-key answer stubbed (no sshd)."""
    page = cluster_page
    fingerprint = "SHA256:" + "Q" * 43
    fetched: list[dict] = []
    added: list[dict] = []

    def host_key(route):
        body = route.request.post_data_json
        fetched.append(body)
        route.fulfill(json={"host": body["host"], "port": body.get("port", 22),
                            "key_type": "ssh-ed25519", "fingerprint": fingerprint,
                            "public_key": "ssh-ed25519 AAAA"})

    def add(route):
        if route.request.method != "POST":
            route.fallback()
            return
        added.append(route.request.post_data_json)
        route.fulfill(status=422, json={"error": {"code": "validation_error",
                                                  "message": "stubbed: not added"}})

    page.route("**/api/v1/nodes/host-key", host_key)
    page.route(re.compile(r".*/api/v1/nodes$"), add)
    page.goto(f"{two['server']}/nodes")
    form = page.get_by_test_id("add-node-form")
    submit = form.get_by_test_id("add-node-submit")
    form.get_by_test_id("node-name").fill("c")
    expect(form.get_by_test_id("node-username")).to_have_value("root")
    form.get_by_test_id("node-private-key").fill("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n")
    form.get_by_test_id("node-host").fill("node-c.example")
    form.get_by_test_id("node-port").fill("2222")
    form.get_by_test_id("fetch-host-key").click()
    key = form.get_by_test_id("host-key")
    expect(key).to_be_visible()
    expect(key.get_by_test_id("host-key-fingerprint")).to_have_text(fingerprint)
    expect(key.get_by_test_id("host-key-type")).to_have_text("ssh-ed25519")
    expect(key.get_by_test_id("host-key-host")).to_have_text("node-c.example:2222")
    assert fetched == [{"host": "node-c.example", "port": 2222}]
    expect(submit).to_be_disabled()  # fetched, not yet confirmed
    form.get_by_test_id("host-key-confirm").check()
    expect(submit).to_be_enabled()
    page.get_by_test_id("add-node").scroll_into_view_if_needed()
    screenshot(page, "nodes-add-host-key-confirmed.png")

    # Another port: the confirmation is gone.
    form.get_by_test_id("node-port").fill("22")
    expect(key).to_be_hidden()
    expect(submit).to_be_disabled()
    expect(form.get_by_test_id("host-key-note")).to_contain_text("fetch and confirm")
    form.get_by_test_id("fetch-host-key").click()
    expect(key).to_be_visible()
    expect(form.get_by_test_id("host-key-confirm")).not_to_be_checked()
    form.get_by_test_id("host-key-confirm").check()
    form.get_by_test_id("node-advanced").locator("summary").click()
    form.get_by_test_id("node-migration-host").fill("10.0.0.3")
    submit.click()
    expect(page.get_by_test_id("alert")).to_contain_text("stubbed: not added")
    assert added == [{"name": "c", "host": "node-c.example", "port": 22, "username": "root",
                      "host_key_fingerprint": fingerprint,
                      "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n",
                      "migration_host": "10.0.0.3"}]


def test_a_failed_add_shows_the_task_error(two: dict, cluster_page: Page):
    """A join that fails in its task (nothing listens on port 1) shows the task and its error."""
    page = cluster_page
    fingerprint = "SHA256:" + "Z" * 43
    page.route("**/api/v1/nodes/host-key", lambda route: route.fulfill(json={
        "host": "127.0.0.1", "port": 1, "key_type": "ssh-rsa", "fingerprint": fingerprint,
        "public_key": "ssh-rsa AAAA"}))
    page.goto(f"{two['server']}/nodes")
    form = page.get_by_test_id("add-node-form")
    form.get_by_test_id("node-host").fill("127.0.0.1")
    form.get_by_test_id("node-port").fill("1")
    form.get_by_test_id("fetch-host-key").click()
    form.get_by_test_id("host-key-confirm").check()
    form.get_by_test_id("node-name").fill("c")
    form.get_by_test_id("node-auth-password").check()
    form.get_by_test_id("node-password").fill("once")
    form.get_by_test_id("add-node-submit").click()
    task = page.get_by_test_id("add-node-task")
    expect(task.get_by_test_id("add-node-task-state")).to_have_text("failed")
    expect(task.get_by_test_id("add-node-task-error")).to_contain_text("ssh_unreachable")
    expect(task.get_by_test_id("add-node-task-log")).to_be_visible()
    expect(page.get_by_test_id("alert")).to_contain_text("Add node c")
    expect(page.get_by_test_id("alert")).not_to_contain_text("[object Object]")
    expect(form.get_by_test_id("node-password")).to_have_value("")  # used once
    expect(page.get_by_test_id("node-row")).to_have_count(2)


def test_vm_page_migrate_dialog(two: dict, cluster_page: Page):
    page = cluster_page
    admin, ids = two["admin"], two["ids"]
    small = next(t["id"] for t in admin.get("/api/v1/vm-templates").body["items"]
                 if t["name"] == "small")
    task = admin.run("POST", "/api/v1/vms", {"name": "mv", "vm_template": small,
                                             "node": ids["demo"]})
    vm_id = task["result"]["vm"]
    page.goto(f"{two['server']}/vms/{vm_id}")
    expect(page.get_by_test_id("vm-title")).to_have_text("mv")
    panel = page.get_by_test_id("migrate-panel")
    expect(panel).to_be_hidden()
    page.get_by_test_id("vm-migrate").click()
    expect(panel).to_be_visible()
    target = panel.get_by_test_id("migrate-target")
    # Only the other node is offered: a migration to the VM's own node is impossible.
    expect(target.locator("option")).to_have_count(1)
    expect(target.locator("option")).to_have_text(["b — online"])
    assert target.locator(f'option[value="{ids["demo"]}"]').count() == 0
    panel.get_by_test_id("migrate-check").click()
    expect(panel.get_by_test_id("migrate-ok")).to_contain_text("b can take mv")

    # Node b goes into maintenance: the pre-flight says so.
    resp = admin.patch(f"/api/v1/nodes/{ids['b']}", {"maintenance": True,
                                                      "maintenance_reason": "disks"})
    admin.wait_task(resp.body["task"]["id"])
    panel.get_by_test_id("migrate-cancel").click()
    expect(panel).to_be_hidden()
    page.get_by_test_id("vm-migrate").click()
    expect(target.locator("option")).to_have_text(["b — maintenance (disks)"])
    panel.get_by_test_id("migrate-check").click()
    expect(panel.get_by_test_id("migrate-problem")).to_contain_text(["in maintenance"])
    # Migrating anyway is refused by the server; the problems are shown, nothing moves.
    panel.get_by_test_id("migrate-submit").click()
    expect(panel.get_by_test_id("migrate-refused")).to_be_visible()
    expect(panel.get_by_test_id("migrate-problem")).to_contain_text(["in maintenance"])
    assert admin.get(f"/api/v1/vms/{vm_id}").body["node"] == ids["demo"]
    expect(page.get_by_test_id("vm-facts")).to_contain_text("demo")
    screenshot(page, "vm-migrate-dialog.png")
    expect(page.get_by_test_id("alert")).to_be_hidden()


def test_migrate_is_disabled_on_a_single_node(two: dict, cluster_page: Page):
    page = cluster_page
    admin, ids = two["admin"], two["ids"]
    assert admin.delete(f"/api/v1/nodes/{ids['b']}").status == 204
    small = next(t["id"] for t in admin.get("/api/v1/vm-templates").body["items"]
                 if t["name"] == "small")
    vm_id = admin.run("POST", "/api/v1/vms", {"name": "solo",
                                              "vm_template": small})["result"]["vm"]
    page.goto(f"{two['server']}/vms/{vm_id}")
    expect(page.get_by_test_id("vm-title")).to_have_text("solo")
    expect(page.get_by_test_id("vm-migrate")).to_be_disabled()
    expect(page.get_by_test_id("vm-migrate")).to_have_attribute("title", re.compile("single node"))
