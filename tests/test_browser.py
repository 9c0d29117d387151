"""The browser UI in a real Chromium (Playwright) against a real server on a test-driver node.

Fixtures come from tests/support/browser.py, imported by name (hence F811 below). Every test
asks for the server before the page, so the page closes before the server stops.
"""
# ruff: noqa: F811

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import (  # noqa: F401  (fixtures are used by name)
    admin_page,
    browser_context_args,
    browser_type_launch_args,
    js_errors,
    plugin_server,
    real_guest,
    screenshot,
    sign_in,
)
from tests.support.client import Client

pytestmark = pytest.mark.browser

PAGES = [
    ("/", "dashboard", "Dashboard"),
    ("/vms", "vms", "Virtual machines"),
    ("/storages", "storages", "Storages"),
    ("/networks", "networks", "Networks"),
    ("/ip-pools", "ip_pools", "IP pools"),
    ("/vm-templates", "vm_templates", "VM templates"),
    ("/nodes", "nodes", "Nodes"),
    ("/tasks", "tasks", "Tasks"),
]


def ids(admin: Client) -> dict[str, str]:
    """Ids of the default template ("small"), the node and the default storage."""
    template = next(t for t in admin.get("/api/v1/vm-templates").body["items"]
                    if t["name"] == "small")
    node = admin.get("/api/v1/nodes").body["items"][0]
    storage = admin.get("/api/v1/storages").body["items"][0]
    return {"template": template["id"], "node": node["id"], "storage": storage["id"]}


def vm_tasks(admin: Client, vm_id: str) -> list[dict]:
    return [t for t in admin.get("/api/v1/tasks").body["items"] if t.get("subject") == vm_id]


def test_wrong_password_shows_an_error(server: str, page: Page, js_errors: list[str]):
    sign_in(page, server, password="not-the-password")
    error = page.get_by_test_id("login-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("wrong username or password")
    expect(page).to_have_url(re.compile(r"/login$"))
    # Pages and the API stay closed.
    page.goto(f"{server}/vms")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_login_shows_the_dashboard_with_the_node(admin_page: Page):
    page = admin_page
    expect(page).to_have_title("Dashboard · Hypervisor panel")
    expect(page.get_by_test_id("user-name")).to_have_text("admin")
    expect(page.get_by_test_id("user-role")).to_have_text("admin")
    card = page.locator('[data-testid="node-card"][data-name="demo"]')
    expect(card).to_be_visible()
    expect(card.get_by_test_id("node-status")).to_have_text("online")
    expect(card).to_contain_text("4 CPUs")
    # The conftest node is a test-driver node: the UI must say it is a demo.
    expect(page.get_by_test_id("demo-banner")).to_be_visible()
    expect(page.get_by_test_id("demo-banner")).to_contain_text("nothing real runs")
    expect(page.get_by_test_id("count-total")).to_contain_text("0")
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert csrf and len(csrf) >= 16


@pytest.mark.parametrize(("path", "key", "heading"), PAGES)
def test_every_page_renders_without_script_errors(admin_page: Page, server: str, path: str,
                                                  key: str, heading: str):
    page = admin_page
    page.goto(server + path)
    expect(page.locator("h1").first).to_have_text(heading)
    expect(page.get_by_test_id(f"nav-{key}")).to_have_class("active")
    expect(page.get_by_test_id("alert")).to_be_hidden()
    # Whatever loads asynchronously has loaded: no "Loading…" placeholder remains.
    expect(page.locator("main")).not_to_contain_text("Loading…")


def test_create_start_stop_destroy_delete_a_vm_through_the_ui(admin_page: Page, server: str,
                                                              admin: Client):
    page = admin_page
    known = ids(admin)
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("nav-vms").click()
    expect(page.get_by_test_id("no-vms")).to_be_visible()

    form = page.get_by_test_id("create-vm-form")
    form.get_by_test_id("vm-name").fill("web1")
    form.get_by_test_id("vm-template").select_option(known["template"])
    form.get_by_test_id("vm-node").select_option(known["node"])
    form.get_by_test_id("vm-storage").select_option(known["storage"])
    form.get_by_test_id("create-vm-submit").click()

    row = page.locator('[data-testid="vm-row"][data-name="web1"]')
    state = row.get_by_test_id("vm-state")
    expect(state).to_have_text("stopped")
    expect(row).to_contain_text("small")
    expect(row).to_contain_text("512 MiB")
    vm_id = row.get_attribute("data-vm-id")
    assert admin.get(f"/api/v1/vms/{vm_id}").body["state"] == "stopped"
    expect(page.get_by_test_id("notice")).to_contain_text("VM web1 created")

    def click_and_wait(action: str, expected_state: str, task_title: str) -> None:
        button = row.get_by_test_id(f"vm-{action}")
        expect(button).to_be_enabled()
        button.click()
        expect(state).to_have_text(expected_state)
        expect(row.get_by_test_id("vm-task")).to_have_count(0)  # the page saw the task end
        newest = admin.wait_task(vm_tasks(admin, vm_id)[0]["id"], timeout=10)
        assert (newest["name"], newest["state"]) == (task_title, "succeeded"), newest

    click_and_wait("start", "running", "Start VM web1")
    expect(row.get_by_test_id("vm-start")).to_be_disabled()
    expect(row.get_by_test_id("vm-reboot")).to_be_enabled()
    assert admin.get(f"/api/v1/vms/{vm_id}").body["state"] == "running"
    click_and_wait("stop", "stopped", "Stop VM web1")
    click_and_wait("start", "running", "Start VM web1")
    click_and_wait("destroy", "stopped", "Destroy VM web1")
    expect(row.get_by_test_id("vm-destroy")).to_be_disabled()

    row.get_by_test_id("vm-delete").click()
    expect(row).to_have_count(0)
    expect(page.get_by_test_id("no-vms")).to_be_visible()
    assert admin.get(f"/api/v1/vms/{vm_id}").status == 404
    expect(page.get_by_test_id("alert")).to_be_hidden()


def test_create_errors_are_shown_in_the_alert(admin_page: Page, server: str):
    page = admin_page
    page.goto(f"{server}/vms")
    form = page.get_by_test_id("create-vm-form")
    form.get_by_test_id("vm-name").fill("bad name!")
    form.get_by_test_id("create-vm-submit").click()
    alert = page.get_by_test_id("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Create VM bad name!")
    expect(alert).to_contain_text("not allowed")
    expect(alert.get_by_test_id("alert-code")).to_have_text("validation_error")
    expect(page.locator('[data-testid="vm-row"]')).to_have_count(0)


def test_vm_page_shows_details_task_progress_and_console(admin_page: Page, server: str,
                                                         admin: Client):
    page = admin_page
    known = ids(admin)
    task = admin.run("POST", "/api/v1/vms", {"name": "db1", "vm_template": known["template"],
                                             "start": True})
    vm_id = task["result"]["vm"]
    page.goto(f"{server}/vms")
    page.locator('[data-testid="vm-row"][data-name="db1"]').get_by_test_id("vm-link").click()
    expect(page).to_have_url(re.compile(rf"/vms/{vm_id}$"))
    expect(page.get_by_test_id("vm-title")).to_have_text("db1")
    expect(page.get_by_test_id("vm-state")).to_have_text("running")
    facts = page.get_by_test_id("vm-facts")
    expect(facts).to_contain_text("demo")
    expect(facts).to_contain_text("small")
    expect(facts).to_contain_text("512 MiB")
    expect(page.get_by_test_id("disk-row")).to_contain_text("db1-disk0.qcow2")
    last = page.get_by_test_id("last-task")
    expect(last.get_by_test_id("task-name")).to_have_text("Create VM db1")
    expect(last.get_by_test_id("task-state")).to_have_text("succeeded")
    expect(last.get_by_test_id("task-progress")).to_have_attribute("aria-valuenow", "100")
    expect(last.get_by_test_id("task-log")).to_contain_text("created on node")
    # The demo node has no serial log: the 422 is explained, not thrown at the user.
    expect(page.get_by_test_id("console-note")).to_contain_text("not available")
    expect(page.get_by_test_id("console")).to_be_hidden()
    expect(page.get_by_test_id("alert")).to_be_hidden()

    page.get_by_test_id("vm-reboot").click()
    expect(last.get_by_test_id("task-name")).to_have_text("Reboot VM db1")
    expect(last.get_by_test_id("task-state")).to_have_text("succeeded")
    page.get_by_test_id("vm-stop").click()
    expect(last.get_by_test_id("task-name")).to_have_text("Stop VM db1")
    expect(last.get_by_test_id("task-state")).to_have_text("succeeded")
    expect(page.get_by_test_id("vm-state")).to_have_text("stopped")
    expect(page.get_by_test_id("vm-start")).to_be_enabled()
    shot = screenshot(page, "vm-detail.png")
    assert shot.stat().st_size > 10_000

    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("vm-delete").click()
    expect(page).to_have_url(re.compile(r"/vms$"))
    assert admin.get(f"/api/v1/vms/{vm_id}").status == 404


def test_a_post_without_the_csrf_header_is_refused(admin_page: Page):
    page = admin_page
    without = page.evaluate("""async () => {
        const r = await fetch('/api/v1/tokens', {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: '{"name": "x"}'});
        return [r.status, await r.json()];
    }""")
    assert without[0] == 403
    assert without[1]["error"]["code"] == "csrf_failed"
    wrong = page.evaluate("""async () => {
        const r = await fetch('/api/v1/tokens', {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': 'forged'},
            body: '{"name": "x"}'});
        return r.status;
    }""")
    assert wrong == 403
    # The same request with the page's token goes through: the cookie alone is not enough.
    with_token = page.evaluate("""async () => {
        const token = document.querySelector('meta[name="csrf-token"]').content;
        const r = await fetch('/api/v1/tokens', {method: 'POST',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': token},
            body: '{"name": "x"}'});
        return r.status;
    }""")
    assert with_token == 201


def test_storage_form_is_rendered_from_a_third_party_schema(plugin_server: str, page: Page,
                                                            js_errors: list[str]):
    sign_in(page, plugin_server)
    expect(page).to_have_url(re.compile(r"/$"))
    page.goto(f"{plugin_server}/storages")
    form = page.get_by_test_id("create-storage-form")
    form.get_by_test_id("storage-backend").select_option("fancy")
    expect(form.get_by_test_id("backend-description")).to_have_text(
        "Third-party test back end")
    options = form.get_by_test_id("backend-options")
    path = options.get_by_test_id("option-path")
    copies = options.get_by_test_id("option-copies")
    compress = options.get_by_test_id("option-compress")
    tier = options.get_by_test_id("option-tier")
    label = options.get_by_test_id("option-volume_label")
    expect(path).to_have_attribute("type", "text")
    expect(path).to_have_value(re.compile(r"/fancy$"))
    expect(copies).to_have_attribute("type", "number")
    expect(copies).to_have_attribute("max", "3")
    expect(copies).to_have_value("2")
    expect(compress).to_have_attribute("type", "checkbox")
    expect(compress).not_to_be_checked()
    expect(tier.locator("option")).to_have_text(["fast", "cheap"])
    expect(label).to_have_value("")
    expect(label).not_to_have_attribute("required", "")
    expect(options.get_by_test_id("field-copies")).to_contain_text("How many copies to keep")
    expect(options.get_by_test_id("field-copies")).to_contain_text("Copies *")
    expect(options.get_by_test_id("field-volume_label")).to_contain_text("Volume label")
    expect(options.get_by_test_id("field-volume_label")).to_contain_text("Free text, optional")

    form.get_by_test_id("storage-name").fill("fast-disks")
    copies.fill("3")
    compress.check()
    tier.select_option(label="cheap")
    form.get_by_test_id("create-storage-submit").click()
    row = page.locator('[data-testid="storage-row"][data-name="fast-disks"]')
    expect(row).to_contain_text("fancy")
    expect(row.get_by_test_id("capacity")).to_contain_text("demo")

    admin = Client(plugin_server).login("admin", "admin-password-for-tests")
    stored = next(s for s in admin.get("/api/v1/storages").body["items"]
                  if s["name"] == "fast-disks")
    assert stored["options"] == {"path": stored["options"]["path"], "copies": 3,
                                 "compress": True, "tier": "cheap"}

    # A refused create (the name is taken) shows the server's error.
    form.get_by_test_id("storage-backend").select_option("fancy")
    form.get_by_test_id("storage-name").fill("fast-disks")
    form.get_by_test_id("create-storage-submit").click()
    alert = page.get_by_test_id("alert")
    expect(alert).to_be_visible()
    expect(alert.get_by_test_id("alert-code")).to_have_text("already_exists")


def test_vm_template_form_creates_a_template(admin_page: Page, server: str):
    page = admin_page
    page.goto(f"{server}/vm-templates")
    form = page.get_by_test_id("create-template-form")
    form.get_by_test_id("template-name").fill("tiny")
    form.get_by_test_id("template-memory").fill("256")
    form.get_by_test_id("template-disk").fill("2")
    form.get_by_test_id("create-template-submit").click()
    row = page.locator('[data-testid="template-row"][data-name="tiny"]')
    expect(row).to_contain_text("256 MiB")
    expect(row).to_contain_text("2 GiB")


def test_logout_ends_the_session(admin_page: Page, server: str):
    page = admin_page
    page.get_by_test_id("logout").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    status = page.evaluate("async () => (await fetch('/api/v1/auth/me')).status")
    assert status == 401
    page.goto(f"{server}/")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_api_data_is_shown_as_text_never_as_html(admin_page: Page, server: str,
                                                 admin: Client):
    page = admin_page
    payload = '<img src=x onerror="window.__xss = 1"><b>bold</b>'
    created = admin.post("/api/v1/vm-templates", {"name": "xss", "memory_mib": 64, "vcpus": 1,
                                                  "disk_gib": 1, "description": payload})
    assert created.status == 201, created
    page.goto(f"{server}/vm-templates")
    row = page.locator('[data-testid="template-row"][data-name="xss"]')
    expect(row).to_contain_text(payload)
    expect(row.locator("img, b")).to_have_count(0)
    assert page.evaluate("window.__xss") is None


def test_a_plain_user_sees_own_vms_and_no_admin_forms(server: str, page: Page,
                                                      js_errors: list[str], admin: Client):
    user = admin.post("/api/v1/users", {"name": "alice", "password": "alice-password",
                                        "role": "user"})
    assert user.status == 201, user
    template = ids(admin)["template"]
    admin.run("POST", "/api/v1/vms", {"name": "admins-vm", "vm_template": template})
    sign_in(page, server, "alice", "alice-password")
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_test_id("user-role")).to_have_text("user")
    page.goto(f"{server}/storages")
    expect(page.get_by_test_id("storage-row")).to_have_count(1)
    expect(page.get_by_test_id("create-storage-form")).to_have_count(0)
    expect(page.get_by_test_id("storage-delete")).to_have_count(0)
    page.goto(f"{server}/vm-templates")
    expect(page.get_by_test_id("template-row")).to_have_count(3)
    expect(page.get_by_test_id("create-template-form")).to_have_count(0)
    page.goto(f"{server}/vms")
    expect(page.get_by_test_id("no-vms")).to_be_visible()  # the admin's VM is not hers
    form = page.get_by_test_id("create-vm-form")
    form.get_by_test_id("vm-name").fill("alice1")
    form.get_by_test_id("vm-start-now").check()
    form.get_by_test_id("create-vm-submit").click()
    row = page.locator('[data-testid="vm-row"][data-name="alice1"]')
    expect(row.get_by_test_id("vm-state")).to_have_text("running")
    expect(page.get_by_test_id("vm-row")).to_have_count(1)


@pytest.mark.slow
def test_vm_page_shows_a_real_guests_console_and_stats(real_guest: dict, page: Page,
                                                       js_errors: list[str]):
    from tests.support.guest import MARKER

    server, admin, vm_id = real_guest["server"], real_guest["admin"], real_guest["vm"]
    sign_in(page, server)
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_test_id("demo-banner")).to_be_hidden()  # a real node, no demo
    page.goto(f"{server}/vms/{vm_id}")
    expect(page.get_by_test_id("vm-state")).to_have_text("running")
    # The console tail refreshes while the guest runs; the guest prints MARKER once booted.
    expect(page.get_by_test_id("console")).to_contain_text(MARKER, timeout=90_000)
    expect(page.get_by_test_id("console-note")).to_be_hidden()
    # Live statistics come from getAllDomainStats (refreshed by the node watcher).
    expect(page.get_by_test_id("vm-stats")).to_contain_text("CPU time", timeout=40_000)
    facts = page.get_by_test_id("vm-facts")
    expect(facts).to_contain_text("qemu")
    screenshot(page, "vm-detail-real-guest.png")

    page.get_by_test_id("vm-stop").click()  # ACPI: the busybox guest powers off by itself
    last = page.get_by_test_id("last-task")
    expect(last.get_by_test_id("task-name")).to_contain_text("Stop VM")
    expect(last.get_by_test_id("task-state")).to_have_text("succeeded", timeout=60_000)
    expect(page.get_by_test_id("vm-state")).to_have_text("stopped")
    assert admin.get(f"/api/v1/vms/{vm_id}").body["state"] == "stopped"


def failed_task(panel, subject: str | None = None) -> dict:
    """A task that fails with a coded error carrying details of both kinds, as services raise."""
    from hypervisor_panel.errors import Invalid

    def body(ctx):
        raise Invalid("the disk does not fit on storage default", code="no_space",
                      details=[{"field": "disk_gib", "message": "at most 4 GiB free"},
                               "free some space first"])

    task = panel.tasks.submit("test.fail", body, title="Resize disk", subject=subject)
    assert panel.tasks.wait(task["id"], timeout=10)["state"] == "failed"
    return task


def test_a_failed_tasks_error_is_readable_text(admin_page: Page, server: str, panel,
                                               admin: Client):
    page = admin_page
    known = ids(admin)
    vm_id = admin.run("POST", "/api/v1/vms", {"name": "err1",
                                              "vm_template": known["template"]})["result"]["vm"]
    task = failed_task(panel, subject=vm_id)

    page.goto(f"{server}/tasks")
    row = page.locator(f'[data-testid="task-row"][data-task-id="{task["id"]}"]')
    expect(row.get_by_test_id("task-state")).to_have_text("failed")
    row.locator("summary").click()
    error = row.get_by_test_id("task-error")
    expect(error).to_be_visible()
    expect(error.get_by_test_id("task-error-message")).to_have_text(
        "the disk does not fit on storage default")
    expect(error.get_by_test_id("task-error-code")).to_have_text("no_space")
    expect(error.locator("li")).to_have_text(["disk_gib: at most 4 GiB free",
                                              "free some space first"])
    expect(page.locator("main")).not_to_contain_text("[object Object]")

    page.goto(f"{server}/")
    line = page.get_by_test_id("dashboard-task-error")
    expect(line).to_contain_text("the disk does not fit on storage default")
    expect(line).to_contain_text("no_space")
    expect(page.locator("main")).not_to_contain_text("[object Object]")

    page.goto(f"{server}/vms/{vm_id}")
    last = page.get_by_test_id("last-task")
    expect(last.get_by_test_id("task-name")).to_have_text("Resize disk")
    expect(last.get_by_test_id("task-error-message")).to_have_text(
        "the disk does not fit on storage default")
    expect(last.get_by_test_id("task-error-code")).to_have_text("no_space")
    expect(last.get_by_test_id("task-error").locator("li")).to_have_count(2)
    expect(page.locator("main")).not_to_contain_text("[object Object]")


def test_the_vm_page_of_a_demo_vm_asks_for_no_console(admin_page: Page, server: str,
                                                      admin: Client):
    page = admin_page
    vm_id = admin.run("POST", "/api/v1/vms", {"name": "quiet1", "vm_template": ids(admin)["template"],
                                              "start": True})["result"]["vm"]
    assert admin.get(f"/api/v1/vms/{vm_id}/console").status == 422  # what the page avoids
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{server}/vms/{vm_id}")
    expect(page.get_by_test_id("vm-state")).to_have_text("running")
    expect(page.get_by_test_id("last-task").get_by_test_id("task-state")).to_have_text("succeeded")
    note = page.get_by_test_id("console-note")
    expect(note).to_be_visible()
    expect(note).to_contain_text("not available")
    expect(note).to_contain_text("demo node")
    expect(page.get_by_test_id("console")).to_be_hidden()
    refresh = page.get_by_test_id("console-refresh")
    refresh.click()
    expect(refresh).to_be_enabled()
    page.wait_for_timeout(5500)  # one round of the page's periodic refreshes
    assert any(url.endswith(f"/api/v1/vms/{vm_id}") for url in requests), requests
    assert not [url for url in requests if "/console" in url]
    expect(page.get_by_test_id("alert")).to_be_hidden()


def test_an_unknown_ui_path_gets_a_styled_404_page(server: str, page: Page,
                                                   js_errors: list[str], admin: Client):
    def check(path: str) -> None:
        response = page.goto(f"{server}{path}")
        assert response is not None and response.status == 404
        assert response.headers["content-type"].startswith("text/html")
        expect(page).to_have_title("Page not found · Hypervisor panel")
        card = page.get_by_test_id("error-page")
        expect(card).to_be_visible()
        expect(card.get_by_test_id("error-status")).to_have_text("404")
        expect(card.locator("h1")).to_have_text("Page not found")
        expect(card.get_by_test_id("error-message")).to_have_text(f"There is no page at {path}.")
        expect(card.get_by_test_id("error-home")).to_have_attribute("href", "/")
        # panel.css applies: the dark top bar and the card, not a bare <h1>404</h1>.
        expect(page.locator(".topbar")).to_have_css("background-color", "rgb(24, 32, 47)")
        expect(card).to_have_css("background-color", "rgb(255, 255, 255)")

    check("/no-such-page")  # anonymous: no session, and no navigation that needs a user
    expect(page.get_by_test_id("nav")).to_have_count(0)
    expect(page.get_by_test_id("logout")).to_have_count(0)
    page.get_by_test_id("error-home").click()
    expect(page).to_have_url(re.compile(r"/login$"))  # the dashboard asks anonymous users to sign in

    sign_in(page, server)
    expect(page).to_have_url(re.compile(r"/$"))
    check("/vms/x/disks")
    page.get_by_test_id("error-home").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("h1")).to_have_text("Dashboard")

    # The API keeps its JSON errors.
    answer = admin.get("/api/v1/no-such-endpoint")
    assert answer.status == 404
    assert answer.body["error"]["code"] == "no_such_endpoint"
    assert page.evaluate("async () => (await fetch('/api/no-such')).status") == 404
    assert page.evaluate(
        "async () => (await (await fetch('/api/no-such')).json()).error.code") == "no_such_endpoint"


# -- networks, IP pools and a VM's interfaces ------------------------------------------------
def lan_with_pool(admin: Client, name: str = "lan", net: str = "10.77.0") -> tuple[dict, dict]:
    """A NAT network and an IP pool on it (10.77.0.10-20), made through the API."""
    network = admin.post("/api/v1/networks", {"name": name, "mode": "nat",
                                              "options": {"address": f"{net}.1", "prefix": 24}})
    assert network.status == 201, network
    pool = admin.post("/api/v1/ip-pools", {
        "name": f"{name}-v4", "network": network.body["id"], "subnet": f"{net}.0/24",
        "range": {"start": f"{net}.10", "end": f"{net}.20"}, "gateway": f"{net}.1"})
    assert pool.status == 201, pool
    return network.body, pool.body


def test_admin_creates_a_network_a_pool_and_a_vm_on_it_through_the_ui(
        admin_page: Page, server: str, admin: Client):
    page = admin_page
    modes = {m["name"]: m for m in admin.get("/api/v1/network-modes").body["items"]}
    assert "nat" in modes, modes  # the libvirt test driver accepts NAT networks
    page.on("dialog", lambda dialog: dialog.accept())

    # The network: its form comes from the nat mode's options_schema.
    page.get_by_test_id("nav-networks").click()
    expect(page.locator("h1")).to_have_text("Networks")
    expect(page.get_by_test_id("no-networks")).to_be_visible()
    form = page.get_by_test_id("create-network-form")
    form.get_by_test_id("network-mode").select_option("nat")
    expect(form.get_by_test_id("mode-description")).to_contain_text(modes["nat"]["description"])
    options = form.get_by_test_id("mode-options")
    schema = modes["nat"]["options_schema"]["properties"]
    address = options.get_by_test_id("option-address")
    prefix = options.get_by_test_id("option-prefix")
    expect(address).to_have_value(schema["address"]["default"])
    expect(prefix).to_have_attribute("type", "number")
    expect(prefix).to_have_attribute("max", str(schema["prefix"]["maximum"]))
    expect(options.get_by_test_id("field-address")).to_contain_text(schema["address"]["title"])
    form.get_by_test_id("network-name").fill("lan")
    address.fill("10.77.0.1")
    prefix.fill("24")
    form.get_by_test_id("create-network-submit").click()
    expect(page.get_by_test_id("notice")).to_contain_text("Network lan created")
    row = page.locator('[data-testid="network-row"][data-name="lan"]')
    expect(row.get_by_test_id("network-mode")).to_have_text("nat")
    node = row.get_by_test_id("network-node")
    expect(node).to_have_attribute("data-node", "demo")
    expect(node.get_by_test_id("network-node-state")).to_have_text("active")
    expect(row).to_contain_text("address: 10.77.0.1")
    expect(row.get_by_test_id("network-no-pools")).to_be_visible()
    network = next(n for n in admin.get("/api/v1/networks").body["items"] if n["name"] == "lan")
    assert (network["mode"], network["options"]["address"], network["options"]["prefix"]) == (
        "nat", "10.77.0.1", 24)

    # The pool, and its usage.
    page.get_by_test_id("nav-ip_pools").click()
    expect(page.locator("h1")).to_have_text("IP pools")
    expect(page.get_by_test_id("no-pools")).to_be_visible()
    form = page.get_by_test_id("create-pool-form")
    form.get_by_test_id("pool-name").fill("lan-v4")
    form.get_by_test_id("pool-network").select_option(network["id"])
    form.get_by_test_id("pool-subnet").fill("10.77.0.0/24")
    form.get_by_test_id("pool-range-start").fill("10.77.0.10")
    form.get_by_test_id("pool-range-end").fill("10.77.0.20")
    form.get_by_test_id("pool-gateway").fill("10.77.0.1")
    form.get_by_test_id("pool-dns").fill("10.77.0.1, 9.9.9.9")
    form.get_by_test_id("pool-exclude").fill("10.77.0.15\n10.77.0.18-10.77.0.19")
    form.get_by_test_id("create-pool-submit").click()
    expect(page.get_by_test_id("notice")).to_contain_text("IP pool lan-v4 created")
    pool = next(p for p in admin.get("/api/v1/ip-pools").body["items"] if p["name"] == "lan-v4")
    assert pool["range"] == {"start": "10.77.0.10", "end": "10.77.0.20"}
    assert (pool["gateway"], pool["dns"]) == ("10.77.0.1", ["10.77.0.1", "9.9.9.9"])
    assert pool["exclude"] == ["10.77.0.15", "10.77.0.18-10.77.0.19"]
    size = pool["usage"]["size"]
    assert size == 8  # 11 addresses in the range, 3 excluded
    row = page.locator('[data-testid="pool-row"][data-name="lan-v4"]')
    expect(row).to_contain_text("10.77.0.10 – 10.77.0.20")
    expect(row).to_contain_text("lan")
    usage = row.get_by_test_id("pool-usage")
    expect(usage.get_by_test_id("pool-usage-text")).to_have_text(
        re.compile(rf"0 in use\s*0 reserved\s*{size} free\s*of {size}"))

    # A VM on that network through the create-VM form: its address in the list.
    page.get_by_test_id("nav-vms").click()
    form = page.get_by_test_id("create-vm-form")
    expect(form.get_by_test_id("vm-ip")).to_be_disabled()  # no network chosen yet
    form.get_by_test_id("vm-name").fill("net1")
    form.get_by_test_id("vm-template").select_option(ids(admin)["template"])
    form.get_by_test_id("vm-network").select_option(network["id"])
    expect(form.get_by_test_id("vm-ip")).to_be_enabled()
    form.get_by_test_id("create-vm-submit").click()
    vm_row = page.locator('[data-testid="vm-row"][data-name="net1"]')
    expect(vm_row.get_by_test_id("vm-state")).to_have_text("stopped")
    expect(vm_row.get_by_test_id("vm-addresses")).to_have_text("10.77.0.10")
    vm = next(v for v in admin.get("/api/v1/vms").body["items"] if v["name"] == "net1")
    assert vm["addresses"] == ["10.77.0.10"]
    assert [n["network"] for n in vm["interfaces"]] == [network["id"]]

    # The pool's usage follows.
    page.get_by_test_id("nav-ip_pools").click()
    expect(row.get_by_test_id("pool-usage-text")).to_contain_text("1 in use")
    expect(row.get_by_test_id("pool-usage-text")).to_contain_text(f"{size - 1} free")

    # The VM's page: its interface, MAC and address with prefix and gateway.
    page.goto(f"{server}/vms/{vm['id']}")
    expect(page.get_by_test_id("vm-title")).to_have_text("net1")
    expect(page.get_by_test_id("vm-fact-addresses")).to_have_text("10.77.0.10")
    nics = page.get_by_test_id("nic-row")
    expect(nics).to_have_count(1)
    first = nics.first
    expect(first.get_by_test_id("nic-network-name")).to_contain_text("lan")
    expect(first.get_by_test_id("nic-mac")).to_have_text(vm["interfaces"][0]["mac"])
    expect(first.get_by_test_id("nic-device")).to_have_text("eth0")
    expect(first.get_by_test_id("nic-address")).to_contain_text("10.77.0.10/24")
    expect(first.get_by_test_id("nic-gateway")).to_have_text("gateway 10.77.0.1")

    # A second interface on the stopped VM, then removed again.
    card = page.get_by_test_id("vm-interfaces-card")
    card.get_by_test_id("nic-network").select_option(network["id"])
    card.get_by_test_id("add-interface-submit").click()
    expect(nics).to_have_count(2)
    expect(page.get_by_test_id("notice")).to_contain_text("added on lan (10.77.0.11)")
    second = nics.nth(1)
    expect(second.get_by_test_id("nic-address")).to_contain_text("10.77.0.11/24")
    expect(second.get_by_test_id("nic-device")).to_have_text("eth1")
    interfaces = admin.get(f"/api/v1/vms/{vm['id']}/interfaces").body["items"]
    assert [a["address"] for n in interfaces for a in n["addresses"]] == ["10.77.0.10",
                                                                          "10.77.0.11"]
    second_mac = interfaces[1]["mac"]
    expect(second.get_by_test_id("nic-mac")).to_have_text(second_mac)
    page.get_by_test_id("network-config").locator("summary").click()
    expect(page.get_by_test_id("network-config-text")).to_contain_text(second_mac)
    second.get_by_test_id("remove-interface").click()
    expect(nics).to_have_count(1)
    expect(page.get_by_test_id("notice")).to_contain_text(f"Interface {second_mac} removed")
    expect(page.get_by_test_id("network-config-text")).not_to_contain_text(second_mac)
    after = admin.get(f"/api/v1/vms/{vm['id']}").body
    assert after["addresses"] == ["10.77.0.10"]
    assert len(after["interfaces"]) == 1
    expect(page.get_by_test_id("alert")).to_be_hidden()
    screenshot(page, "vm-interfaces.png")


def test_pool_reservations_addresses_and_refused_deletes(admin_page: Page, server: str,
                                                         admin: Client):
    page = admin_page
    page.on("dialog", lambda dialog: dialog.accept())
    network, pool = lan_with_pool(admin)
    size = pool["usage"]["size"]

    # Reserve an address, see it counted, release it.
    page.goto(f"{server}/ip-pools")
    row = page.locator('[data-testid="pool-row"][data-name="lan-v4"]')
    row.get_by_test_id("pool-addresses").click()
    detail = page.get_by_test_id("pool-detail")
    expect(detail.get_by_test_id("pool-detail-title")).to_contain_text("lan-v4")
    expect(detail.get_by_test_id("no-allocations")).to_be_visible()
    detail.get_by_test_id("reserve-address").fill("10.77.0.12")
    detail.get_by_test_id("reserve-note").fill("the router")
    detail.get_by_test_id("reserve-submit").click()
    reserved = detail.locator('[data-testid="allocation-row"][data-address="10.77.0.12"]')
    expect(reserved.get_by_test_id("allocation-kind")).to_have_text("reserved")
    expect(reserved).to_contain_text("the router")
    expect(row.get_by_test_id("pool-usage-text")).to_contain_text("1 reserved")
    expect(row.get_by_test_id("pool-usage-text")).to_contain_text(f"{size - 1} free")
    # Reserving an address outside the pool: the API's error, in the alert.
    detail.get_by_test_id("reserve-address").fill("192.0.2.1")
    detail.get_by_test_id("reserve-submit").click()
    expect(page.get_by_test_id("alert")).to_be_visible()
    expect(page.get_by_test_id("alert")).to_contain_text("Reserve 192.0.2.1 in lan-v4")
    reserved.get_by_test_id("release-reservation").click()
    expect(reserved).to_have_count(0)
    expect(row.get_by_test_id("pool-usage-text")).to_contain_text(f"{size} free")
    assert admin.get(f"/api/v1/ip-pools/{pool['id']}/allocations").body["items"] == []

    # A VM with a chosen address (admins may give one) shows up among the allocations.
    task = admin.run("POST", "/api/v1/vms", {"name": "fixed1", "vm_template": ids(admin)["template"],
                                             "network": network["id"], "ip": "10.77.0.17"})
    vm_id = task["result"]["vm"]
    used = detail.locator('[data-testid="allocation-row"][data-address="10.77.0.17"]')
    expect(used.get_by_test_id("allocation-kind")).to_have_text("in use", timeout=15_000)
    expect(used.get_by_test_id("allocation-vm")).to_have_text("fixed1")

    # The network cannot go while the pool and the VM use it: the 409 names them.
    page.goto(f"{server}/networks")
    net_row = page.locator('[data-testid="network-row"][data-name="lan"]')
    expect(net_row.get_by_test_id("network-pool")).to_contain_text("lan-v4")
    net_row.get_by_test_id("network-delete").click()
    alert = page.get_by_test_id("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Delete network lan")
    expect(alert.get_by_test_id("alert-code")).to_have_text("network_in_use")
    expect(alert.locator("li")).to_have_text(["IP pool lan-v4", "VM fixed1"])
    expect(net_row).to_have_count(1)

    # Admins add and remove addresses on an interface from the VM page.
    page.goto(f"{server}/vms/{vm_id}")
    nic = page.get_by_test_id("nic-row")
    expect(nic.get_by_test_id("nic-address")).to_have_text(re.compile(r"10\.77\.0\.17/24"))
    nic.get_by_test_id("add-address-ip").fill("10.77.0.19")
    nic.get_by_test_id("add-address-submit").click()
    expect(nic.get_by_test_id("nic-address")).to_have_count(2)
    expect(page.get_by_test_id("notice")).to_contain_text("10.77.0.19 added")
    assert admin.get(f"/api/v1/vms/{vm_id}").body["addresses"] == ["10.77.0.17", "10.77.0.19"]
    # The same address again: a conflict, shown with its code.
    nic.get_by_test_id("add-address-ip").fill("10.77.0.19")
    nic.get_by_test_id("add-address-submit").click()
    expect(page.get_by_test_id("alert")).to_be_visible()
    expect(page.get_by_test_id("alert")).to_contain_text("Add an address to")
    nic.locator('[data-testid="nic-address"][data-address="10.77.0.19"]').get_by_test_id(
        "remove-address").click()
    expect(nic.get_by_test_id("nic-address")).to_have_count(1)
    assert admin.get(f"/api/v1/vms/{vm_id}").body["addresses"] == ["10.77.0.17"]

    # Delete the VM, then the pool, then the network: each goes once nothing uses it.
    admin.run("DELETE", f"/api/v1/vms/{vm_id}")
    page.goto(f"{server}/ip-pools")
    row.get_by_test_id("pool-delete").click()
    expect(row).to_have_count(0)
    expect(page.get_by_test_id("no-pools")).to_be_visible()
    page.goto(f"{server}/networks")
    net_row.get_by_test_id("network-delete").click()
    expect(net_row).to_have_count(0)
    expect(page.get_by_test_id("no-networks")).to_be_visible()
    assert admin.get("/api/v1/networks").body["items"] == []


def test_a_networks_error_on_a_node_is_shown(admin_page: Page, server: str, panel,
                                             admin: Client):
    page = admin_page
    network, _pool = lan_with_pool(admin)
    node = admin.get("/api/v1/nodes").body["items"][0]
    # What the panel records when a node that (re)connects cannot set the network up.
    panel.networks.update(network["id"], {"nodes": {node["id"]: {
        "state": "error", "error": "bridge br0 missing on node demo"}}})
    page.goto(f"{server}/networks")
    row = page.locator('[data-testid="network-row"][data-name="lan"]')
    state = row.locator('[data-testid="network-node"][data-node="demo"]')
    expect(state.get_by_test_id("network-node-state")).to_have_text("error")
    expect(state.get_by_test_id("network-node-error")).to_have_text(
        "demo: bridge br0 missing on node demo")


def test_a_user_sees_no_network_admin_pages_but_the_vms_interfaces(
        server: str, page: Page, js_errors: list[str], admin: Client):
    network, _pool = lan_with_pool(admin)
    user = admin.post("/api/v1/users", {"name": "bob", "password": "bob-password-1",
                                        "role": "user"})
    assert user.status == 201, user
    sign_in(page, server, "bob", "bob-password-1")
    expect(page).to_have_url(re.compile(r"/$"))
    nav = page.get_by_test_id("nav")
    expect(nav.get_by_test_id("nav-vms")).to_be_visible()
    expect(nav.get_by_test_id("nav-networks")).to_have_count(0)
    expect(nav.get_by_test_id("nav-ip_pools")).to_have_count(0)
    for path in ("/networks", "/ip-pools"):  # typed by hand: a note, no admin forms, no 403s
        page.goto(server + path)
        expect(page.get_by_test_id("admin-only")).to_be_visible()
        expect(page.locator("form.form-grid")).to_have_count(0)
        expect(page.get_by_test_id("alert")).to_be_hidden()

    page.goto(f"{server}/vms")
    form = page.get_by_test_id("create-vm-form")
    expect(form.get_by_test_id("vm-ip")).to_have_count(0)  # only admins choose addresses
    form.get_by_test_id("vm-name").fill("bob1")
    form.get_by_test_id("vm-network").select_option(network["id"])
    form.get_by_test_id("create-vm-submit").click()
    row = page.locator('[data-testid="vm-row"][data-name="bob1"]')
    expect(row.get_by_test_id("vm-state")).to_have_text("stopped")
    expect(row.get_by_test_id("vm-addresses")).to_have_text("10.77.0.10")
    row.get_by_test_id("vm-link").click()
    nic = page.get_by_test_id("nic-row")
    expect(nic.get_by_test_id("nic-network-name")).to_contain_text("lan")
    expect(nic.get_by_test_id("nic-address")).to_contain_text("10.77.0.10/24")
    expect(nic.get_by_test_id("add-address-form")).to_have_count(0)
    expect(nic.get_by_test_id("remove-address")).to_have_count(0)
    expect(page.get_by_test_id("nic-ip")).to_have_count(0)
    expect(page.get_by_test_id("alert")).to_be_hidden()


def test_an_exhausted_pool_is_shown_on_the_pools_page_and_when_adding_an_interface(
        admin_page: Page, server: str, admin: Client):
    page = admin_page
    network = admin.post("/api/v1/networks", {"name": "tiny", "mode": "nat",
                                              "options": {"address": "10.66.0.1", "prefix": 24}})
    assert network.status == 201, network
    pool = admin.post("/api/v1/ip-pools", {"name": "tiny-v4", "network": network.body["id"],
                                           "subnet": "10.66.0.0/24",
                                           "range": {"start": "10.66.0.10", "end": "10.66.0.10"}})
    assert pool.status == 201, pool
    vm_id = admin.run("POST", "/api/v1/vms", {"name": "only1", "vm_template": ids(admin)["template"],
                                              "network": network.body["id"]})["result"]["vm"]
    page.goto(f"{server}/ip-pools")
    row = page.locator('[data-testid="pool-row"][data-name="tiny-v4"]')
    expect(row.get_by_test_id("pool-usage-text")).to_contain_text("1 in use")
    expect(row.get_by_test_id("pool-full")).to_be_visible()

    page.goto(f"{server}/vms/{vm_id}")
    expect(page.get_by_test_id("nic-row")).to_have_count(1)
    card = page.get_by_test_id("vm-interfaces-card")
    card.get_by_test_id("nic-network").select_option(network.body["id"])
    card.get_by_test_id("add-interface-submit").click()
    alert = page.get_by_test_id("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Add an interface on tiny to only1")
    expect(alert.get_by_test_id("alert-code")).to_have_text("pool_exhausted")
    expect(page.get_by_test_id("nic-row")).to_have_count(1)
