"""The users page in a real Chromium: an admin creates a user with a quota and a
permission, edits them, and the API enforces what the form set.

Fixtures come from tests/support/browser.py, imported by name (hence F811 below).
"""
# ruff: noqa: F811

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support.api import assert_error, small_template
from tests.support.browser import (  # noqa: F401  (fixtures are used by name)
    admin_page,
    browser_context_args,
    browser_type_launch_args,
    js_errors,
    sign_in,
)
from tests.support.client import Client

pytestmark = pytest.mark.browser


def test_an_admin_sets_a_users_quota_and_permissions_in_the_form(admin_page: Page,
                                                                  server: str, admin: Client,
                                                                  js_errors: list[str]):
    page = admin_page
    page.goto(f"{server}/users")
    expect(page.locator("h1")).to_have_text("Users")
    expect(page.get_by_test_id("nav-users")).to_have_class("active")
    form = page.get_by_test_id("user-form")
    form.get_by_test_id("user-name-input").fill("rita")
    form.get_by_test_id("user-password").fill("rita-password-1")
    form.get_by_test_id("quota-vms").fill("1")
    form.get_by_test_id("perm-add_recipes").check()
    form.get_by_test_id("user-submit").click()
    row = page.locator('[data-testid="user-row"][data-name="rita"]')
    expect(row.get_by_test_id("user-quota")).to_have_text("0/1 VMs")
    expect(row.get_by_test_id("user-permissions")).to_have_text("recipes")
    rita = next(u for u in admin.get("/api/v1/users").body["items"] if u["name"] == "rita")
    assert rita["quota"] == {"vms": 1} and rita["permissions"] == {
        "add_recipes": True, "upload_isos": False}

    as_rita = Client(server).login("rita", "rita-password-1")
    template = small_template(admin)
    assert as_rita.run("POST", "/api/v1/vms", {"name": "r1", "vm_template": template["id"]})
    assert_error(as_rita.post("/api/v1/vms", {"name": "r2", "vm_template": template["id"]}),
                 403, "quota_exceeded")

    row.get_by_test_id("user-edit").click()
    expect(form.get_by_test_id("user-name-input")).to_be_disabled()
    form.get_by_test_id("quota-vms").fill("2")
    form.get_by_test_id("quota-ips").fill("4")
    form.get_by_test_id("perm-upload_isos").check()
    form.get_by_test_id("user-submit").click()
    expect(row.get_by_test_id("user-quota")).to_have_text("1/2 VMs, 0/4 IPs")
    expect(row.get_by_test_id("user-permissions")).to_have_text("recipes, ISOs")
    assert as_rita.run("POST", "/api/v1/vms", {"name": "r2", "vm_template": template["id"]})
    assert as_rita.get("/api/v1/auth/me").status == 200  # no password change: still signed in
    expect(page.get_by_test_id("alert")).to_be_hidden()
    assert js_errors == []


def test_the_users_page_is_for_admins_only(server: str, page: Page, admin: Client,
                                           js_errors: list[str]):
    assert admin.post("/api/v1/users", {"name": "sam", "password": "sam-password-1"}).status \
        == 201
    sign_in(page, server, "sam", "sam-password-1")
    expect(page.get_by_test_id("nav-users")).to_have_count(0)
    page.goto(f"{server}/users")
    expect(page.get_by_test_id("users-admin-only")).to_be_visible()
    expect(page.get_by_test_id("user-table")).to_have_count(0)
