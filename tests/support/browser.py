"""Fixtures for the browser tests: Debian's Chromium driven by Playwright.

Import the fixtures you use into the test module (``from tests.support.browser import ...``):
they override pytest-playwright's defaults there. Never ``playwright install``: the browser
is the system's ``/usr/bin/chromium``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import ADMIN_PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-results"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """pytest-playwright's launch options plus the system Chromium."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}}


@pytest.fixture
def js_errors(page: Page) -> Iterator[list[str]]:
    """Uncaught exceptions in the page's scripts and Content-Security-Policy violations
    (what the policy blocked); the test fails if any happened."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and "Content Security Policy" in msg.text else None)
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    yield errors
    assert errors == [], f"JavaScript errors on the page: {errors}"


def sign_in(page: Page, base: str, username: str = "admin",
            password: str = ADMIN_PASSWORD) -> None:
    page.goto(f"{base}/login")
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()


@pytest.fixture
def admin_page(server: str, page: Page, js_errors: list[str]) -> Page:
    """A page signed in as admin, showing the dashboard (server first: it outlives the page)."""
    sign_in(page, server)
    expect(page).to_have_url(re.compile(r"/$"))
    return page


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


# -- a panel with a third-party storage back end (its form must come from its schema) ------
def fancy_backend(default_path: str) -> type:
    from hypervisor_panel_plugins.storage_dir.backend import DirStorage

    class FancyStorage(DirStorage):
        """A stand-in third-party back end: a dir pool with options of every simple type."""

        name = "fancy"
        description = "Third-party test back end"
        options_schema = {
            "type": "object",
            "additionalProperties": False,
            "required": ["path", "copies"],
            "properties": {
                "path": {"type": "string", "title": "Directory", "minLength": 2,
                         "description": "Where the images live", "default": default_path},
                "copies": {"type": "integer", "title": "Copies", "minimum": 1, "maximum": 3,
                           "default": 2, "description": "How many copies to keep"},
                "compress": {"type": "boolean", "title": "Compress images", "default": False},
                "tier": {"enum": ["fast", "cheap"], "title": "Tier", "default": "fast"},
                "volume_label": {"type": "string", "description": "Free text, optional"},
            },
        }

    return FancyStorage


@pytest.fixture
def plugin_server(tmp_path: Path) -> Iterator[str]:
    """A served panel whose plugin manager also holds a third-party storage plugin."""
    from hypervisor_panel.hookspecs import hookimpl
    from hypervisor_panel.panel import Panel
    from hypervisor_panel.plugins import get_plugin_manager
    from hypervisor_panel.web.app import create_app
    from hypervisor_panel.web.server import serve_in_thread

    backend = fancy_backend(str(tmp_path / "fancy"))

    class FancyPlugin:
        @hookimpl
        def register_storage_backends(self, panel):
            return [backend]

    node_xml = tmp_path / "test-node.xml"  # a private copy: the default test-driver URI is shared
    shutil.copyfile(Path(__file__).resolve().parents[1] / "data" / "test-node.xml", node_xml)
    panel = Panel(tmp_path / "data", pm=get_plugin_manager(extra=[FancyPlugin()]),
                  local_uri=f"test://{node_xml}", default_storage_path=str(tmp_path / "img"))
    panel.start(admin_password=ADMIN_PASSWORD)
    srv, port = serve_in_thread(create_app(panel))
    yield f"http://127.0.0.1:{port}"
    srv.stop()
    panel.close()


# -- a panel on the real libvirtd, with a TCG guest that writes to its serial console -------
@pytest.fixture
def real_guest(tmp_path: Path) -> Iterator[dict]:
    """A served panel on qemu:///system and a running busybox guest created through the API.

    Yields ``{"server", "admin", "vm"}``; the guest, storage and template are removed after.
    """
    import uuid

    from hypervisor_panel.panel import Panel
    from hypervisor_panel.web.app import create_app
    from hypervisor_panel.web.server import serve_in_thread
    from tests.support.client import Client
    from tests.support.guest import build_guest_assets
    from tests.support.realvirt import REPO_ROOT, ensure_libvirtd

    uri = ensure_libvirtd()
    assets = build_guest_assets(REPO_ROOT / ".cache" / "guest")
    panel = Panel(tmp_path / "data", local_uri=uri, default_storage_path=None)
    panel.start(admin_password=ADMIN_PASSWORD)
    srv, port = serve_in_thread(create_app(panel))
    base = f"http://127.0.0.1:{port}"
    admin = Client(base).login("admin", ADMIN_PASSWORD)
    tag = uuid.uuid4().hex[:6]
    pool_dir = Path(f"/var/lib/libvirt/images/hvp-ui-{tag}")
    storage = admin.post("/api/v1/storages", {"name": f"ui-{tag}", "backend": "dir",
                                              "options": {"path": str(pool_dir)}})
    assert storage.status == 201, storage
    template = admin.post("/api/v1/vm-templates", {"name": f"tiny-{tag}", "memory_mib": 128,
                                                   "vcpus": 1, "disk_gib": 1})
    assert template.status == 201, template
    try:
        task = admin.run("POST", "/api/v1/vms", {
            "name": f"ui-guest-{tag}", "vm_template": template.body["id"],
            "storage": storage.body["id"], "start": True,
            "boot": {"kernel": str(assets.kernel), "initrd": str(assets.initrd),
                     "cmdline": "console=ttyS0 quiet"},
        }, timeout=180)
        yield {"server": base, "admin": admin, "vm": task["result"]["vm"]}
    finally:
        for vm in admin.get("/api/v1/vms").body["items"]:
            admin.delete(f"/api/v1/vms/{vm['id']}")
        for task in admin.get("/api/v1/tasks?state=running").body["items"]:
            admin.wait_task(task["id"], timeout=60)
        for task in admin.get("/api/v1/tasks?state=queued").body["items"]:
            admin.wait_task(task["id"], timeout=60)
        admin.delete(f"/api/v1/storages/{storage.body['id']}")
        srv.stop()
        panel.close()
        if pool_dir.exists() and not any(pool_dir.iterdir()):
            pool_dir.rmdir()
