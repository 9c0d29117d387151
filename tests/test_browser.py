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
