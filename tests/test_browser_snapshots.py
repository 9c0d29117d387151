"""The VM page's Snapshots section in a real Chromium: take, revert to and delete snapshots.

Fixtures come from tests/support/browser.py, imported by name (hence F811 below). The
libvirt test driver takes, reverts and deletes snapshots of its domains.
"""
# ruff: noqa: F811

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import (  # noqa: F401  (fixtures are used by name)
    admin_page,
    browser_context_args,
    browser_type_launch_args,
    js_errors,
)
from tests.support.client import Client

pytestmark = pytest.mark.browser


def small_template(admin: Client) -> str:
    return next(t["id"] for t in admin.get("/api/v1/vm-templates").body["items"]
                if t["name"] == "small")


def take(page: Page, name: str, description: str = "") -> None:
    form = page.get_by_test_id("snapshot-form")
    form.get_by_test_id("snapshot-name").fill(name)
    form.get_by_test_id("snapshot-description").fill(description)
    form.get_by_test_id("snapshot-submit").click()


def test_snapshots_are_taken_reverted_to_and_deleted_from_the_vm_page(
        admin_page: Page, server: str, admin: Client, js_errors: list[str]):
    page = admin_page
    vm_id = admin.run("POST", "/api/v1/vms", {"name": "snap1",
                                              "vm_template": small_template(admin)})["result"]["vm"]
    page.goto(f"{server}/vms/{vm_id}")
    card = page.get_by_test_id("vm-snapshots-card")
    expect(card.get_by_test_id("no-snapshots")).to_be_visible()
    alert = page.get_by_test_id("alert")

    take(page, "before-upgrade", "clean install")
    first = card.locator('[data-testid="snapshot-row"][data-name="before-upgrade"]')
    expect(first.get_by_test_id("snapshot-state")).to_have_text("ready")
    expect(first).to_contain_text("clean install")
    expect(first.get_by_test_id("snapshot-memory")).to_have_text("no")  # the VM is stopped
    expect(page.get_by_test_id("snapshot-name")).to_have_value("")  # the form was reset
    expect(alert).to_be_hidden()

    take(page, "after-upgrade")
    second = card.locator('[data-testid="snapshot-row"][data-name="after-upgrade"]')
    expect(second.get_by_test_id("snapshot-state")).to_have_text("ready")
    rows = card.get_by_test_id("snapshot-table").get_by_test_id("snapshot-row")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-name", "before-upgrade")  # oldest first

    # An invalid name is refused by the form itself (its pattern): no request goes out.
    take(page, "-bad name")
    expect(rows).to_have_count(2)
    assert page.get_by_test_id("snapshot-name").evaluate("e => !e.validity.valid")
    page.get_by_test_id("snapshot-name").fill("")

    messages: list[str] = []

    def accept(dialog) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    first.get_by_test_id("snapshot-revert").click()
    tray = page.get_by_test_id("tray-task").filter(has_text="Revert VM snap1 to before-upgrade")
    expect(tray.get_by_test_id("tray-task-state")).to_have_text("succeeded")
    assert messages == ["Revert VM snap1 to snapshot before-upgrade? Changes since then are "
                        "lost; backups start a new full chain."]
    expect(first.get_by_test_id("snapshot-revert")).to_be_enabled()
    expect(rows).to_have_count(2)
    expect(alert).to_be_hidden()
    reverts = [t for t in admin.get("/api/v1/tasks").body["items"]
               if t["kind"] == "vm.snapshot_revert" and t.get("subject") == vm_id]
    assert [t["state"] for t in reverts] == ["succeeded"]

    page.once("dialog", lambda d: d.accept())
    second.get_by_test_id("snapshot-delete").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-name", "before-upgrade")
    expect(alert).to_be_hidden()
    names = [s["name"] for s in admin.get(f"/api/v1/vms/{vm_id}/snapshots").body["items"]]
    assert names == ["before-upgrade"]
    assert js_errors == []


def test_a_refused_snapshot_shows_in_the_alert(admin_page: Page, server: str, admin: Client):
    page = admin_page
    vm_id = admin.run("POST", "/api/v1/vms", {"name": "snap2",
                                              "vm_template": small_template(admin)})["result"]["vm"]
    admin.run("POST", f"/api/v1/vms/{vm_id}/snapshots", {"name": "one"})
    page.goto(f"{server}/vms/{vm_id}")
    expect(page.locator('[data-testid="snapshot-row"][data-name="one"]')).to_be_visible()
    take(page, "one")
    alert = page.get_by_test_id("alert")
    expect(alert).to_be_visible()
    expect(alert.get_by_test_id("alert-code")).to_have_text("already_exists")
    expect(page.get_by_test_id("snapshot-row")).to_have_count(1)
