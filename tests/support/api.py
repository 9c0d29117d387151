"""Assertions and views shared by the API tests."""

from __future__ import annotations

from tests.support.client import Client


def small_template(admin: Client) -> dict:
    """The built-in "small" VM template."""
    return next(t for t in admin.get("/api/v1/vm-templates").body["items"]
                if t["name"] == "small")


def snapshot(admin: Client) -> dict:
    """Everything bad input must leave unchanged."""
    return {name: admin.get(f"/api/v1/{name}").body["items"]
            for name in ("vms", "vm-templates", "storages", "nodes", "users")}


def assert_error(resp, status: int, code: str | None = None) -> None:
    """``resp`` is the JSON error shape with ``status`` (and ``code``, when given)."""
    assert resp.status == status, resp
    assert set(resp.body) == {"error"}, resp
    assert isinstance(resp.body["error"]["message"], str) and resp.body["error"]["message"]
    if code:
        assert resp.body["error"]["code"] == code, resp
