"""The audit log page in a real Chromium: an admin's change shows up, filtered.

Fixtures come from tests/support/browser.py, imported by name (hence F811 below).
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
    sign_in,
)
from tests.support.client import Client

pytestmark = pytest.mark.browser


def test_an_admins_change_shows_in_the_filtered_audit_log(admin_page: Page, server: str,
                                                           admin: Client):
    page = admin_page
    page.goto(f"{server}/vm-templates")  # a state-changing call from the browser session
    form = page.get_by_test_id("create-template-form")
    form.get_by_test_id("template-name").fill("audit-ui")
    form.get_by_test_id("create-template-submit").click()
    expect(page.locator('[data-testid="template-row"][data-name="audit-ui"]')).to_be_visible()
    assert admin.post("/api/v1/vm-templates", {"name": "x", "memory_mib": 0, "vcpus": 1,
                                               "disk_gib": 1}).status == 422

    page.get_by_test_id("nav-audit").click()
    expect(page.locator("h1")).to_have_text("Audit log")
    expect(page.get_by_test_id("nav-audit")).to_have_class("active")
    filters = page.get_by_test_id("audit-filters")
    filters.get_by_test_id("audit-filter-actor").fill("admin")
    filters.get_by_test_id("audit-filter-action").fill("POST /vm-templates")
    filters.get_by_test_id("audit-filter-result").select_option("ok")
    filters.get_by_test_id("audit-filter-submit").click()
    rows = page.get_by_test_id("audit-row")
    expect(rows).to_have_count(1)
    expect(rows.get_by_test_id("audit-summary")).to_contain_text("name: audit-ui")
    expect(rows.get_by_test_id("audit-actor")).to_have_text("admin")
    expect(rows.get_by_test_id("audit-address")).to_have_text("127.0.0.1")
    expect(rows.get_by_test_id("audit-status")).to_have_text("201")
    expect(rows).to_contain_text("via session")

    filters.get_by_test_id("audit-filter-result").select_option("failed")
    filters.get_by_test_id("audit-filter-submit").click()
    expect(rows).to_have_count(1)
    expect(rows.get_by_test_id("audit-status")).to_have_text("422")
    expect(rows.get_by_test_id("audit-error")).to_have_text("validation_error")
    expect(page.get_by_test_id("alert")).to_be_hidden()


def test_a_user_gets_a_note_not_the_log(server: str, page: Page, js_errors: list[str],
                                        admin: Client):
    assert admin.post("/api/v1/users", {"name": "bob", "password": "bob-password-1",
                                        "role": "user"}).status == 201
    sign_in(page, server, "bob", "bob-password-1")
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_test_id("nav-audit")).to_have_count(0)
    page.goto(f"{server}/audit")
    expect(page.get_by_test_id("admin-only")).to_be_visible()
    expect(page.get_by_test_id("audit-table")).to_have_count(0)
