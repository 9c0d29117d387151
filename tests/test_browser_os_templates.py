"""The OS templates, recipes, create-VM-from-a-template and recipe-runs UI in a real
Chromium (Playwright) against a real panel on the real libvirtd (qemu:///system).

OS template imports and uploads need a storage that takes uploads: the test driver refuses
them, so the panel here runs on the real libvirtd with a dir storage of its own (removed
after the module). Images are small qcow2/raw files made with ``qemu-img``; the repository
is a local folder with an ``index.json``.

The recipe runs shown on the VM page are real tasks of the panel: the VM (installed from a
template image that does not boot an OS) has a user-mode network with a 127.0.0.1 forward of
its port 22, so the run waits for an SSH banner that never comes, streaming its
"waiting for SSH" line; the test cancels it from the page. One test boots a real guest
(the fast busybox + dropbear image of tests/support/images.py, on SSH within seconds under
TCG) and watches its recipe's output stream into the VM page. Recipes in booted guests are
also tested in tests/test_recipes.py and tests/test_os_install_real.py.

Fixtures come from tests/support/browser.py, imported by name (hence F811 below). Every test
asks for the server before the page, so the page closes before the server stops.
"""
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.support.browser import (  # noqa: F401  (fixtures are used by name)
    admin_page,
    browser_context_args,
    browser_type_launch_args,
    js_errors,
    screenshot,
    sign_in,
)
from tests.support.client import Client
from tests.support.images import ed25519_keypair, fast_image
from tests.support.realvirt import REPO_ROOT
from tests.test_os_install_real import login, sh
from tests.test_os_install_real import upload_template as upload_fast_template

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # slow: the real libvirtd

MIB = 1024 * 1024
TAG = "uitest"
UI_CONFIG_SCRIPT = "#!/bin/sh\ncat \"$HVP_SEED/hvp-hostname\" > /etc/hostname\n"
USER, USER_PASSWORD = "ursula", "ursula-password-1"

RECIPE = """#!/bin/sh
# metadata_begin
# recipe: ui_hello
# tags: {tags}
# revision: {revision}
# description_en: Says hello from the UI test
# param: GREETING type=string default=hi description="What to say"
# param: WORKERS type=int default=2
# param: MODE type=enum(dev|prod) default=prod
# param: VERBOSE type=bool default=no
# param: DB_PASSWORD type=string required=yes secret=yes
# timeout: 10m
# metadata_end
echo "$GREETING from $HVP_VM_ID"
"""
OTHER_RECIPE = """#!/bin/sh
# metadata_begin
# recipe: ui_other
# tags: {tags}
# revision: 1
# metadata_end
echo other
"""

LIVE_RECIPE = """#!/bin/sh
# metadata_begin
# recipe: ui_live
# tags: busybox
# revision: 1
# description_en: Counts to five, a line at a time
# param: WHO type=string required=yes description="Who is counting"
# param: PAUSE type=int default=1 description="Seconds between the lines"
# metadata_end
echo "counting for $WHO"
for i in 1 2 3 4 5; do echo "line $i"; sleep "$PAUSE"; done
echo "done counting"
"""


# -- images and repositories --------------------------------------------------------------
def make_image(path: Path, fmt: str, data_mib: int = 1) -> Path:
    """A small qcow2 or raw image: a zeroed first sector (nothing to boot), then data."""
    raw = path.with_suffix(".src")
    raw.write_bytes(b"\0" * 4096 + os.urandom(data_mib * MIB - 4096) + b"\0" * MIB)
    if fmt == "raw":
        raw.rename(path)
        return path
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
                   check=True, capture_output=True)
    raw.unlink()
    return path


def index_entry(root: Path, rel: str, fmt: str, **meta: Any) -> dict[str, Any]:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image(path, fmt)
    content = path.read_bytes()
    return {"name": Path(rel).name.split(".")[0], "os_family": "testos", "os_version": "1",
            "file": rel, "format": fmt, "sha256": hashlib.sha256(content).hexdigest(),
            "size": len(content), "tags": [TAG], **meta}


def write_index(root: Path, entries: list[dict[str, Any]]) -> None:
    (root / "index.json").write_text(json.dumps({"version": 1, "templates": entries}))


def upload_template(admin: Client, storage: str, path: Path, name: str,
                    tags: list[str]) -> dict[str, Any]:
    """A ready OS template, uploaded through the API (metadata, then the file)."""
    data = path.read_bytes()
    made = admin.post("/api/v1/os-templates/uploads", {
        "name": name, "os_family": "testos", "os_version": "1", "format": "qcow2",
        "storage": storage, "tags": tags, "min_memory_mib": 128,
        "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    assert made.status == 201, made
    resp = admin.request("PUT", f"/api/v1/os-templates/{made.body['id']}/content", raw=data,
                         headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 202, resp
    task = admin.wait_task(resp.body["task"]["id"])
    assert task["state"] == "succeeded", task
    return task["result"]


def ssh_public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{key} ui@test"


# -- the panel on the real libvirtd ---------------------------------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A served panel on qemu:///system with a dir storage and a small VM template."""
    from tests.support.realvirt import ensure_libvirtd, served_panel

    uri = ensure_libvirtd()
    tag = uuid.uuid4().hex[:6]
    pool = Path(f"/var/lib/libvirt/images/hvp-uiost-{tag}")
    with served_panel(tmp_path_factory.mktemp("uiost") / "data", uri) as (panel, admin):
        storage = admin.post("/api/v1/storages", {"name": f"uiost-{tag}", "backend": "dir",
                                                  "options": {"path": str(pool)}})
        assert storage.status == 201, storage
        template = admin.post("/api/v1/vm-templates", {"name": f"ui-tiny-{tag}",
                                                       "memory_mib": 128, "vcpus": 1,
                                                       "disk_gib": 1})
        assert template.status == 201, template
        try:
            yield {"panel": panel, "admin": admin, "server": admin.base, "tag": tag,
                   "storage": storage.body, "vm_template": template.body, "pool": pool}
        finally:
            wipe(admin, storage.body["id"])
            admin.delete(f"/api/v1/vm-templates/{template.body['id']}")
            assert admin.delete(f"/api/v1/storages/{storage.body['id']}").status == 204
            subprocess.run(["rm", "-rf", str(pool)], check=False)


@pytest.fixture(scope="module")
def server(real: dict[str, Any]) -> str:
    """The pages of this module are served by the real-libvirtd panel."""
    return real["server"]


@pytest.fixture(autouse=True)
def tidy(real: dict[str, Any]) -> Iterator[None]:
    """Each test starts and ends with nothing of its own left in the panel."""
    yield
    wipe(real["admin"], real["storage"]["id"])


def wipe(admin: Client, storage_id: str) -> None:
    """Remove what the tests made: runs, VMs, templates, repos, recipes, networks, users."""
    for state in ("running", "queued"):
        for task in admin.get(f"/api/v1/tasks?state={state}").body["items"]:
            admin.post(f"/api/v1/tasks/{task['id']}/actions/cancel", {})
    for state in ("running", "queued"):
        for task in admin.get(f"/api/v1/tasks?state={state}").body["items"]:
            admin.wait_task(task["id"], timeout=60)
    for vm in admin.get("/api/v1/vms").body["items"]:
        resp = admin.delete(f"/api/v1/vms/{vm['id']}")
        if resp.status == 202:
            admin.wait_task(resp.body["task"]["id"], timeout=60)
    for template in admin.get("/api/v1/os-templates").body["items"]:
        admin.delete(f"/api/v1/os-templates/{template['id']}")
    for repo in admin.get("/api/v1/os-template-repos").body["items"]:
        admin.delete(f"/api/v1/os-template-repos/{repo['id']}")
    for source in admin.get("/api/v1/recipe-sources").body["items"]:
        admin.delete(f"/api/v1/recipe-sources/{source['id']}")
    for recipe in admin.get("/api/v1/recipes").body["items"]:
        admin.delete(f"/api/v1/recipes/{recipe['id']}")
    admin.patch("/api/v1/recipe-settings", {"users_may_add": False, "default_recipe": None})
    for network in admin.get("/api/v1/networks").body["items"]:
        admin.delete(f"/api/v1/networks/{network['id']}")
    for user in admin.get("/api/v1/users").body["items"]:
        if user["name"] != "admin":
            admin.delete(f"/api/v1/users/{user['id']}")
    volumes = f"/api/v1/storages/{storage_id}/volumes"
    for volume in admin.get(volumes).body["items"]:
        admin.delete(f"{volumes}/{volume['name']}")
    leftovers = {"vms": admin.get("/api/v1/vms").body["items"],
                 "os-templates": admin.get("/api/v1/os-templates").body["items"],
                 "volumes": admin.get(volumes).body["items"]}
    assert not any(leftovers.values()), leftovers


def record_texts(page: Page, *testids: str) -> None:
    """Keep every text the elements with these test ids show (to see passing progress)."""
    selector = ", ".join(f'[data-testid="{t}"]' for t in testids)
    page.evaluate("""(selector) => {
        window.hvpSeen = [];
        const look = () => {
            for (const node of document.querySelectorAll(selector)) {
                const text = node.textContent;
                if (text && window.hvpSeen[window.hvpSeen.length - 1] !== text) window.hvpSeen.push(text);
            }
        };
        new MutationObserver(look).observe(document.body,
            {subtree: true, childList: true, characterData: true, attributes: true});
    }""", selector)


def seen_texts(page: Page) -> list[str]:
    return page.evaluate("() => window.hvpSeen")


def sign_in_as_user(page: Page, server: str, admin: Client) -> None:
    made = admin.post("/api/v1/users", {"name": USER, "password": USER_PASSWORD})
    assert made.status == 201, made
    page.context.clear_cookies()
    sign_in(page, server, USER, USER_PASSWORD)
    expect(page.get_by_test_id("user-role")).to_have_text("user")


# -- the pages render --------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "key", "heading"), [
    ("/os-templates", "os_templates", "OS templates"), ("/recipes", "recipes", "Recipes")])
def test_the_new_pages_render_without_script_errors(admin_page: Page, server: str, path: str,
                                                    key: str, heading: str):
    page = admin_page
    page.get_by_test_id(f"nav-{key}").click()
    expect(page).to_have_url(re.compile(f"{path}$"))
    expect(page.locator("h1").first).to_have_text(heading)
    expect(page.get_by_test_id(f"nav-{key}")).to_have_class("active")
    expect(page.get_by_test_id("alert")).to_be_hidden()
    expect(page.locator("main")).not_to_contain_text("Loading…")


# -- the OS templates page -----------------------------------------------------------------
def test_os_templates_repository_import_upload_and_delete(admin_page: Page, server: str,
                                                          real: dict[str, Any], tmp_path: Path):
    page, admin, storage = admin_page, real["admin"], real["storage"]
    page.on("dialog", lambda dialog: dialog.accept())
    root = tmp_path / "repo"
    first = index_entry(root, "images/ui-tiny.qcow2", "qcow2", description="UI test image",
                        min_memory_mib=128)
    write_index(root, [first])

    page.get_by_test_id("nav-os_templates").click()
    expect(page.get_by_test_id("no-os-templates")).to_be_visible()
    expect(page.get_by_test_id("no-repos")).to_be_visible()

    # Add the folder repository: the option fields come from the source's schema.
    form = page.get_by_test_id("add-repo-form")
    form.get_by_test_id("repo-name").fill("ui-folder")
    form.get_by_test_id("repo-source").select_option("folder")
    form.get_by_test_id("option-path").fill(str(root))
    form.get_by_test_id("add-repo-submit").click()
    expect(page.get_by_test_id("notice")).to_contain_text("Repository ui-folder added: 1 template")
    repo_row = page.locator('[data-testid="repo-row"][data-name="ui-folder"]')
    expect(repo_row.get_by_test_id("repo-templates")).to_have_text("1")
    expect(repo_row).to_contain_text(str(root))
    catalog = page.locator('[data-testid="catalog-row"][data-name="ui-tiny"]')
    expect(catalog).to_contain_text("UI test image")
    expect(catalog).to_contain_text("testos 1")

    # A broken repository is refused at once, with the reason.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.json").write_text("{not json")
    form.get_by_test_id("repo-name").fill("ui-broken")
    form.get_by_test_id("option-path").fill(str(broken))
    form.get_by_test_id("add-repo-submit").click()
    expect(page.get_by_test_id("alert")).to_be_visible()
    expect(page.get_by_test_id("alert-code")).to_have_text("bad_index")
    assert [r["name"] for r in admin.get("/api/v1/os-template-repos").body["items"]] == \
        ["ui-folder"]

    # The index gains an entry: Refresh reads it again and says what changed.
    write_index(root, [first, index_entry(root, "images/ui-second.img", "raw")])
    repo_row.get_by_test_id("repo-refresh").click()
    expect(page.get_by_test_id("notice")).to_contain_text(
        "Repository ui-folder refreshed: 1 added, 0 changed, 0 removed")
    expect(repo_row.get_by_test_id("repo-templates")).to_have_text("2")
    expect(page.locator('[data-testid="catalog-row"][data-name="ui-second"]')).to_be_visible()

    # Import from the repository: the row follows the import task's progress.
    record_texts(page, "import-progress-text")
    catalog.get_by_test_id("catalog-storage").select_option(storage["id"])
    catalog.get_by_test_id("catalog-import").click()
    expect(page.get_by_test_id("notice")).to_contain_text("OS template ui-tiny is ready")
    expect(catalog.get_by_test_id("catalog-state")).to_have_text("imported")
    imported = page.locator('[data-testid="os-template-row"][data-name="ui-tiny"]')
    expect(imported.get_by_test_id("os-template-state")).to_have_text("ready")
    expect(imported).to_contain_text(storage["name"])
    expect(imported).to_contain_text("from ui-folder")
    seen = seen_texts(page)
    assert seen and all(re.match(r"^\d+%", text) for text in seen), seen
    record = next(t for t in admin.get("/api/v1/os-templates").body["items"]
                  if t["name"] == "ui-tiny")
    task = admin.get(f"/api/v1/tasks/{record['task']}").body
    assert task["state"] == "succeeded" and task["progress"] == 100
    assert any("downloaded" in line for line in task["log"]), task["log"]
    assert (real["pool"] / record["volume"]).is_file()

    # Upload an image: the bar shows the bytes sent, then the import task, then "Ready".
    image = make_image(tmp_path / "ui-upload.qcow2", "qcow2", data_mib=2)
    upload = page.get_by_test_id("upload-form")
    upload.get_by_test_id("upload-file").set_input_files(str(image))
    expect(upload.get_by_test_id("upload-name")).to_have_value("ui-upload")
    expect(upload.get_by_test_id("upload-format")).to_have_value("qcow2")
    upload.get_by_test_id("upload-os-family").fill("testos")
    upload.get_by_test_id("upload-os-version").fill("2")
    upload.get_by_test_id("upload-tags").fill(f"{TAG}, extra")
    upload.get_by_test_id("upload-min-memory").fill("128")
    upload.get_by_test_id("upload-storage").select_option(storage["id"])
    expect(upload.get_by_test_id("upload-script-field")).to_be_hidden()
    upload.get_by_test_id("upload-config").select_option("script")  # its own configuration
    upload.get_by_test_id("upload-script").fill(UI_CONFIG_SCRIPT)
    record_texts(page, "upload-progress-text")
    upload.get_by_test_id("upload-submit").click()
    expect(upload.get_by_test_id("upload-stage")).to_have_text("Ready")
    expect(page.get_by_test_id("notice")).to_contain_text("OS template ui-upload is ready")
    size = image.stat().st_size
    seen = seen_texts(page)
    sent = [text for text in seen if text.endswith(" sent")]
    assert sent and sent[-1].startswith("100% · "), seen
    assert any(re.match(r"^\d+%( · .*)?$", t) and not t.endswith(" sent") for t in seen), seen
    uploaded = page.locator('[data-testid="os-template-row"][data-name="ui-upload"]')
    expect(uploaded.get_by_test_id("os-template-state")).to_have_text("ready")
    expect(uploaded).to_contain_text("uploaded")
    expect(uploaded).to_contain_text("testos 2")
    expect(uploaded.get_by_test_id("os-template-config")).to_have_text("its own script")
    expect(uploaded.get_by_test_id("tags")).to_contain_text("extra")
    made = next(t for t in admin.get("/api/v1/os-templates").body["items"]
                if t["name"] == "ui-upload")
    assert made["state"] == "ready" and made["size"] == size and made["tags"] == [TAG, "extra"]
    assert made["config"] == "script" and made["script"] == UI_CONFIG_SCRIPT
    expect(upload.get_by_test_id("upload-script-field")).to_be_hidden()  # the form was reset
    assert (real["pool"] / made["volume"]).is_file()
    screenshot(page, "os-templates.png")

    # A plain user sees the ready templates, and no admin form or button.
    sign_in_as_user(page, server, admin)
    page.goto(f"{server}/os-templates")
    expect(page.locator('[data-testid="os-template-row"]')).to_have_count(2)
    for testid in ("catalog-card", "repos-card", "upload-card", "os-template-delete"):
        expect(page.get_by_test_id(testid)).to_have_count(0)
    expect(page.get_by_test_id("alert")).to_be_hidden()

    # Back as admin: delete both templates (and their volumes), then the repository.
    page.context.clear_cookies()
    sign_in(page, server)
    page.goto(f"{server}/os-templates")
    for name in ("ui-tiny", "ui-upload"):
        row = page.locator(f'[data-testid="os-template-row"][data-name="{name}"]')
        row.get_by_test_id("os-template-delete").click()
        expect(page.get_by_test_id("notice")).to_contain_text(f"OS template {name} deleted")
        expect(row).to_have_count(0)
    expect(page.get_by_test_id("no-os-templates")).to_be_visible()
    assert admin.get("/api/v1/os-templates").body["items"] == []
    assert not (real["pool"] / record["volume"]).exists()
    assert not (real["pool"] / made["volume"]).exists()
    expect(catalog.get_by_test_id("catalog-import")).to_be_visible()  # can be imported again
    page.locator('[data-testid="repo-row"][data-name="ui-folder"]').get_by_test_id(
        "repo-remove").click()
    expect(page.get_by_test_id("no-repos")).to_be_visible()
    expect(page.get_by_test_id("no-catalog")).to_be_visible()
    assert admin.get("/api/v1/os-template-repos").body["items"] == []


# -- the recipes page ----------------------------------------------------------------------
def test_recipes_add_view_edit_parameters_and_delete(admin_page: Page, server: str,
                                                     real: dict[str, Any]):
    page, admin = admin_page, real["admin"]
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("nav-recipes").click()
    expect(page.get_by_test_id("no-recipes")).to_be_visible()

    # A script without a metadata block is refused with the reason; nothing is added.
    form = page.get_by_test_id("add-recipe-form")
    form.get_by_test_id("add-recipe-script").fill("#!/bin/sh\necho no metadata\n")
    form.get_by_test_id("add-recipe-submit").click()
    expect(page.get_by_test_id("alert")).to_be_visible()
    expect(page.get_by_test_id("alert-code")).to_have_text("recipe_no_metadata")
    expect(page.get_by_test_id("alert")).to_contain_text("metadata")
    assert admin.get("/api/v1/recipes").body["items"] == []

    # A VMmanager recipe with the panel's `# param:` lines: it opens with its script.
    script = RECIPE.format(tags=f"{TAG},debian", revision=1)
    form.get_by_test_id("add-recipe-script").fill(script)
    form.get_by_test_id("add-recipe-submit").click()
    expect(page.get_by_test_id("notice")).to_contain_text("Recipe ui_hello added")
    row = page.locator('[data-testid="recipe-row"][data-name="ui_hello"]')
    expect(row.get_by_test_id("recipe-tags")).to_contain_text(TAG)
    expect(row.get_by_test_id("recipe-param-names")).to_contain_text("DB_PASSWORD")
    expect(row.get_by_test_id("recipe-revision")).to_have_text("1")
    expect(row.get_by_test_id("recipe-origin")).to_have_text("uploaded")
    detail = page.get_by_test_id("recipe-detail")
    expect(detail).to_be_visible()
    expect(detail.get_by_test_id("recipe-detail-title")).to_have_text("Recipe ui_hello")
    expect(detail.get_by_test_id("recipe-script")).to_have_text(script)
    expect(detail.get_by_test_id("recipe-facts")).to_contain_text("10 min")

    # The parameters table: types, defaults (a secret's never), required, descriptions.
    params = detail.get_by_test_id("recipe-param")
    expect(params).to_have_count(5)

    def param(name: str):
        return detail.locator(f'[data-testid="recipe-param"][data-name="{name}"]')

    expect(param("GREETING").get_by_test_id("param-type")).to_have_text("string")
    expect(param("GREETING").get_by_test_id("param-default")).to_have_text("hi")
    expect(param("GREETING")).to_contain_text("What to say")
    expect(param("WORKERS").get_by_test_id("param-type")).to_have_text("int")
    expect(param("MODE").get_by_test_id("param-type")).to_have_text("enum (dev | prod)")
    expect(param("VERBOSE").get_by_test_id("param-type")).to_have_text("bool")
    expect(param("DB_PASSWORD").get_by_test_id("param-secret")).to_be_visible()
    expect(param("DB_PASSWORD").get_by_test_id("param-required")).to_have_text("yes")
    expect(param("GREETING").get_by_test_id("param-required")).to_have_text("no")

    # Close, then View again from the list.
    detail.get_by_test_id("recipe-detail-close").click()
    expect(detail).to_be_hidden()
    row.get_by_test_id("recipe-view").click()
    expect(detail.get_by_test_id("recipe-script")).to_have_text(script)

    # Edit: the metadata is parsed again (revision, parameters) and the access is set.
    detail.get_by_test_id("recipe-edit").click()
    edit = detail.get_by_test_id("recipe-edit-form")
    expect(edit.get_by_test_id("recipe-edit-script")).to_have_value(script)
    changed = RECIPE.format(tags=f"{TAG},debian", revision=2).replace(
        "# timeout: 10m", "# param: EXTRA type=string description=\"Added by the edit\"\n"
        "# timeout: 10m")
    edit.get_by_test_id("recipe-edit-script").fill(changed)
    edit.get_by_test_id("recipe-edit-access").select_option("admins")
    edit.get_by_test_id("recipe-edit-save").click()
    expect(page.get_by_test_id("notice")).to_contain_text("Recipe ui_hello saved (revision 2)")
    expect(edit).to_be_hidden()
    expect(detail.get_by_test_id("recipe-detail-revision")).to_have_text("2")
    expect(detail.get_by_test_id("recipe-detail-access")).to_have_text("admins only")
    expect(detail.get_by_test_id("recipe-script")).to_have_text(changed)
    expect(params).to_have_count(6)
    expect(param("EXTRA")).to_contain_text("Added by the edit")
    expect(row.get_by_test_id("recipe-revision")).to_have_text("2")
    expect(row.get_by_test_id("recipe-access")).to_contain_text("admins only")
    stored = admin.get("/api/v1/recipes").body["items"][0]
    assert stored["revision"] == 2 and stored["access"] == "admins" and stored["script"] == changed

    # A bad edit is refused with the reason; the recipe stays as it was.
    detail.get_by_test_id("recipe-edit").click()
    edit.get_by_test_id("recipe-edit-script").fill("echo broken\n")
    edit.get_by_test_id("recipe-edit-save").click()
    expect(page.get_by_test_id("alert-code")).to_have_text("recipe_no_metadata")
    edit.get_by_test_id("recipe-edit-cancel").click()
    assert admin.get(f"/api/v1/recipes/{stored['id']}").body["script"] == changed

    # Admins let users add recipes; a plain user then sees the add form, and the
    # "all" recipes without their scripts.
    other = admin.post("/api/v1/recipes", {"script": OTHER_RECIPE.format(tags=TAG)})
    assert other.status == 201, other
    page.reload()
    settings = page.get_by_test_id("recipe-settings-form")
    settings.get_by_test_id("settings-users-may-add").check()
    settings.get_by_test_id("settings-save").click()
    expect(page.get_by_test_id("notice")).to_contain_text("Recipe settings saved")
    assert admin.get("/api/v1/recipe-settings").body["users_may_add"] is True
    sign_in_as_user(page, server, admin)
    page.goto(f"{server}/recipes")
    user_row = page.locator('[data-testid="recipe-row"][data-name="ui_other"]')
    expect(user_row).to_be_visible()
    expect(page.locator('[data-testid="recipe-row"][data-name="ui_hello"]')).to_have_count(0)
    expect(user_row.get_by_test_id("recipe-delete")).to_have_count(0)
    user_row.get_by_test_id("recipe-view").click()
    expect(page.get_by_test_id("recipe-script-hidden")).to_be_visible()
    expect(page.get_by_test_id("recipe-script")).to_be_hidden()
    expect(page.get_by_test_id("recipe-edit")).to_be_hidden()
    expect(page.get_by_test_id("add-recipe-card")).to_be_visible()
    for testid in ("recipe-sources-card", "recipe-settings-card"):
        expect(page.get_by_test_id(testid)).to_have_count(0)

    # Back as admin: delete both from the list.
    page.context.clear_cookies()
    sign_in(page, server)
    page.goto(f"{server}/recipes")
    for name in ("ui_hello", "ui_other"):
        page.locator(f'[data-testid="recipe-row"][data-name="{name}"]').get_by_test_id(
            "recipe-delete").click()
        expect(page.get_by_test_id("notice")).to_contain_text(f"Recipe {name} deleted")
    expect(page.get_by_test_id("no-recipes")).to_be_visible()
    expect(detail).to_be_hidden()
    assert admin.get("/api/v1/recipes").body["items"] == []


# -- creating a VM from a template with a recipe; the runs on the VM page ----------------------
def test_create_a_vm_from_a_template_with_a_recipe_and_watch_its_runs(
        admin_page: Page, server: str, real: dict[str, Any], tmp_path: Path):
    page, admin, storage = admin_page, real["admin"], real["storage"]
    page.on("dialog", lambda dialog: dialog.accept())
    image = make_image(tmp_path / "base.qcow2", "qcow2")
    os_template = upload_template(admin, storage["id"], image, "ui-os", [TAG])
    other_os = upload_template(admin, storage["id"], image, "ui-other-os", ["centos7"])
    hello = admin.post("/api/v1/recipes", {"script": RECIPE.format(tags=TAG, revision=1)}).body
    other = admin.post("/api/v1/recipes", {"script": OTHER_RECIPE.format(tags=TAG)}).body
    net = admin.post("/api/v1/networks", {"name": f"ui-user-{real['tag']}", "mode": "user"})
    assert net.status == 201, net
    key = ssh_public_key()

    page.get_by_test_id("nav-vms").click()
    form = page.get_by_test_id("create-vm-form")
    form.get_by_test_id("vm-name").fill("ui-from-template")
    form.get_by_test_id("vm-template").select_option(real["vm_template"]["id"])

    # Only ready templates; the guest settings and recipes appear with one.
    expect(form.get_by_test_id("vm-install")).to_be_hidden()
    form.get_by_test_id("vm-os-template").select_option(other_os["id"])
    expect(form.get_by_test_id("vm-install")).to_be_visible()
    expect(form.get_by_test_id("vm-storage")).to_have_value(storage["id"])
    expect(form.get_by_test_id("vm-storage")).to_be_disabled()
    expect(form.get_by_test_id("vm-os-template-note")).to_contain_text("clone of ui-other-os")
    recipe_select = form.get_by_test_id("vm-recipe")
    expect(recipe_select).to_be_disabled()  # no recipe shares a tag with centos7
    expect(recipe_select).to_contain_text("No recipe suits ui-other-os")
    form.get_by_test_id("vm-os-template").select_option(os_template["id"])
    expect(recipe_select).to_be_enabled()
    expect(recipe_select.locator("option")).to_have_count(3)  # none + the two recipes

    # The parameters form is generated from the recipe's metadata.
    params = form.get_by_test_id("vm-recipe-params")
    expect(params).to_be_hidden()
    recipe_select.select_option(hello["id"])
    expect(params).to_be_visible()
    expect(params.get_by_test_id("option-GREETING")).to_have_value("hi")
    expect(params.get_by_test_id("option-GREETING")).to_have_attribute("type", "text")
    expect(params.get_by_test_id("field-GREETING")).to_contain_text("What to say")
    expect(params.get_by_test_id("option-WORKERS")).to_have_attribute("type", "number")
    expect(params.get_by_test_id("option-WORKERS")).to_have_value("2")
    expect(params.get_by_test_id("option-MODE")).to_contain_text("prod")
    expect(params.get_by_test_id("option-VERBOSE")).to_have_attribute("type", "checkbox")
    expect(params.get_by_test_id("option-VERBOSE")).not_to_be_checked()
    secret = params.get_by_test_id("option-DB_PASSWORD")
    expect(secret).to_have_attribute("type", "password")
    expect(secret).to_have_attribute("required", "")

    form.get_by_test_id("vm-network").select_option(net.body["id"])
    forwards = form.get_by_test_id("vm-nic-options").get_by_test_id("option-forwards")
    expect(forwards).to_be_visible()
    forwards.fill('[{"guest_port": 22}]')
    form.get_by_test_id("vm-hostname").fill("uihost")
    form.get_by_test_id("vm-password").fill("root-password-1")
    form.get_by_test_id("vm-ssh-keys").fill(key)

    # An incompatible choice is refused by the panel, with the reason shown: the other
    # recipe loses its shared tag after the form listed it.
    recipe_select.select_option(other["id"])
    expect(params).to_contain_text("This recipe takes no parameters.")
    patched = admin.patch(f"/api/v1/recipes/{other['id']}",
                          {"script": OTHER_RECIPE.format(tags="centos7")})
    assert patched.status == 200, patched
    form.get_by_test_id("create-vm-submit").click()
    expect(page.get_by_test_id("alert")).to_be_visible()
    expect(page.get_by_test_id("alert-code")).to_have_text("recipe_incompatible")
    assert admin.get("/api/v1/vms").body["items"] == []

    # The compatible recipe with its parameters: the request carries what the form says.
    recipe_select.select_option(hello["id"])
    params.get_by_test_id("option-GREETING").fill("hello there")
    params.get_by_test_id("option-WORKERS").fill("4")
    params.get_by_test_id("option-MODE").select_option(label="dev")
    params.get_by_test_id("option-VERBOSE").check()
    params.get_by_test_id("option-DB_PASSWORD").fill("s3cret-value")
    with page.expect_request(lambda r: r.url.endswith("/api/v1/vms")
                             and r.method == "POST") as sent:
        form.get_by_test_id("create-vm-submit").click()
    body = sent.value.post_data_json
    assert body == {
        "name": "ui-from-template", "vm_template": real["vm_template"]["id"],
        "interfaces": [{"network": net.body["id"], "options": {"forwards": [{"guest_port": 22}]}}],
        "os_template": os_template["id"], "hostname": "uihost", "ssh_keys": [key],
        "password": "root-password-1", "recipe": hello["id"],
        "recipe_params": {"GREETING": "hello there", "WORKERS": 4, "MODE": "dev",
                          "VERBOSE": True, "DB_PASSWORD": "s3cret-value"},
    }, body
    row = page.locator('[data-testid="vm-row"][data-name="ui-from-template"]')
    expect(page.get_by_test_id("notice")).to_contain_text("VM ui-from-template created",
                                                          timeout=90_000)
    expect(form.get_by_test_id("vm-password")).to_have_value("")  # never kept in the page
    expect(params.get_by_test_id("option-DB_PASSWORD")).to_have_value("")
    vm_id = row.get_attribute("data-vm-id")
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    assert vm["os_template"] == os_template["id"] and vm["hostname"] == "uihost"
    assert vm["state"] == "running"  # a recipe starts the VM
    create = next(t for t in admin.get("/api/v1/tasks").body["items"]
                  if t.get("subject") == vm_id and t["kind"] == "vm.create")
    assert create["state"] == "succeeded" and create["result"]["recipe_task"], create
    runs = admin.get(f"/api/v1/vms/{vm_id}/recipe-runs").body["items"]
    assert len(runs) == 1 and runs[0]["name"] == "ui_hello"
    assert runs[0]["params"]["DB_PASSWORD"] == "********"  # noqa: S105 - the mask
    assert runs[0]["params"]["GREETING"] == "hello there" and runs[0]["params"]["WORKERS"] == "4"
    forward = vm["interfaces"][0]["options"]["forwards"][0]
    assert forward["guest_port"] == 22 and forward["host_port"] > 0

    # The VM page: the run with its parameters (the secret masked) and its live log.
    row.get_by_test_id("vm-link").click()
    expect(page).to_have_url(re.compile(f"/vms/{vm_id}$"))
    card = page.get_by_test_id("vm-recipes-card")
    run = card.locator(f'[data-testid="recipe-run"][data-run-id="{runs[0]["id"]}"]')
    expect(run.get_by_test_id("run-name")).to_have_text("ui_hello")
    expect(run.get_by_test_id("run-state")).to_have_text("running")
    expect(run.get_by_test_id("run-params")).to_contain_text("DB_PASSWORD=********")
    expect(run.get_by_test_id("run-params")).to_contain_text("GREETING=hello there")
    expect(run.get_by_test_id("run-log")).to_contain_text(
        f"panel: waiting for SSH on 127.0.0.1:{forward['host_port']}")
    expect(card).not_to_contain_text("s3cret-value")

    # Cancel it from the page: the run ends cancelled.
    run.get_by_test_id("run-cancel").click()
    expect(run.get_by_test_id("run-state")).to_have_text("cancelled", timeout=30_000)
    expect(run.get_by_test_id("run-cancel")).to_have_count(0)

    # Run it again from the VM page with other values: a second run, newest first.
    run_form = card.get_by_test_id("run-recipe-form")
    # Only recipes suiting the VM's template: ui_other lost its shared tag above.
    expect(run_form.get_by_test_id("run-recipe-select").locator("option")).to_have_count(2)
    run_form.get_by_test_id("run-recipe-select").select_option(hello["id"])
    run_params = run_form.get_by_test_id("run-recipe-params")
    expect(run_params.get_by_test_id("option-GREETING")).to_have_value("hi")
    run_params.get_by_test_id("option-GREETING").fill("second")
    run_params.get_by_test_id("option-DB_PASSWORD").fill("another-secret")
    run_form.get_by_test_id("run-recipe-submit").click()
    expect(page.get_by_test_id("notice")).to_contain_text("Recipe ui_hello started")
    runs_shown = card.get_by_test_id("recipe-run")
    expect(runs_shown).to_have_count(2)
    newest = runs_shown.first
    expect(newest.get_by_test_id("run-params")).to_contain_text("GREETING=second")
    expect(newest.get_by_test_id("run-log")).to_contain_text("panel: waiting for SSH")
    expect(page.get_by_test_id("last-task")).to_contain_text("Run recipe ui_hello")
    expect(card).not_to_contain_text("another-secret")
    screenshot(page, "vm-recipe-runs.png")
    newest.get_by_test_id("run-cancel").click()
    expect(newest.get_by_test_id("run-state")).to_have_text("cancelled", timeout=30_000)
    runs = admin.get(f"/api/v1/vms/{vm_id}/recipe-runs").body["items"]
    assert [r["state"] for r in runs] == ["cancelled", "cancelled"]
    assert runs[0]["params"]["GREETING"] == "second"
    assert all("another-secret" not in line and "s3cret-value" not in line
               for r in runs for line in r["log"])


@pytest.mark.timeout(600)
def test_the_ui_creates_a_vm_from_a_template_with_a_recipe_and_watches_the_recipes_log(
        admin_page: Page, server: str, real: dict[str, Any]):
    """A real guest (the fast busybox + dropbear image): the recipe chosen in the create form
    runs over SSH once the guest boots, and the VM page shows its output as it streams."""
    page, admin, storage = admin_page, real["admin"], real["storage"]
    image = fast_image(REPO_ROOT / ".cache" / "images")
    os_template = upload_fast_template(admin, storage, image.qcow2, image.index)
    assert os_template["tags"] == ["busybox", "dropbear", "fast", "test"], os_template
    recipe = admin.post("/api/v1/recipes", {"script": LIVE_RECIPE})
    assert recipe.status == 201, recipe
    # Host ports of its own: panels of other test sessions on this host start at 20000.
    low = random.randrange(30000, 60000, 100)  # noqa: S311 - not a secret
    net = admin.post("/api/v1/networks", {"name": f"ui-live-{real['tag']}", "mode": "user",
                                          "options": {"port_range": {"min": low,
                                                                     "max": low + 99}}})
    assert net.status == 201, net
    private, public = ed25519_keypair("ui-live")

    # The create form: the OS template, its recipe with a parameter, the user-mode network
    # with an SSH forward (the panel logs in through it), root's key.
    page.get_by_test_id("nav-vms").click()
    form = page.get_by_test_id("create-vm-form")
    name = f"ui-live-{real['tag']}"  # the libvirt domain's name: unique on the host
    form.get_by_test_id("vm-name").fill(name)
    form.get_by_test_id("vm-template").select_option(real["vm_template"]["id"])
    form.get_by_test_id("vm-os-template").select_option(os_template["id"])
    expect(form.get_by_test_id("vm-install")).to_be_visible()
    recipe_select = form.get_by_test_id("vm-recipe")
    expect(recipe_select).to_be_enabled()
    recipe_select.select_option(recipe.body["id"])
    params = form.get_by_test_id("vm-recipe-params")
    expect(params.get_by_test_id("option-PAUSE")).to_have_value("1")
    params.get_by_test_id("option-WHO").fill("the browser")
    params.get_by_test_id("option-PAUSE").fill("2")  # time enough to see the log grow
    form.get_by_test_id("vm-network").select_option(net.body["id"])
    form.get_by_test_id("vm-nic-options").get_by_test_id("option-forwards").fill(
        '[{"guest_port": 22}]')
    form.get_by_test_id("vm-hostname").fill("ui-live")
    form.get_by_test_id("vm-ssh-keys").fill(public)
    with page.expect_request(lambda r: r.url.endswith("/api/v1/vms")
                             and r.method == "POST") as sent:
        form.get_by_test_id("create-vm-submit").click()
    body = sent.value.post_data_json
    assert body["recipe"] == recipe.body["id"], body
    assert body["recipe_params"] == {"WHO": "the browser", "PAUSE": 2}, body
    assert body["interfaces"] == [{"network": net.body["id"],
                                   "options": {"forwards": [{"guest_port": 22}]}}], body
    assert body["ssh_keys"] == [public], body
    expect(page.get_by_test_id("notice")).to_contain_text(f"VM {name} created", timeout=120_000)

    # The VM page: the run appears and its log grows line by line while the recipe runs.
    row = page.locator(f'[data-testid="vm-row"][data-name="{name}"]')
    vm_id = row.get_attribute("data-vm-id")
    forward = admin.get(f"/api/v1/vms/{vm_id}").body["interfaces"][0]["options"]["forwards"][0]
    assert forward["guest_port"] == 22 and low <= forward["host_port"] <= low + 99, forward
    row.get_by_test_id("vm-link").click()
    expect(page).to_have_url(re.compile(f"/vms/{vm_id}$"))
    record_texts(page, "run-log")
    card = page.get_by_test_id("vm-recipes-card")
    run = card.locator('[data-testid="recipe-run"][data-name="ui_live"]')
    log = run.get_by_test_id("run-log")
    expect(run.get_by_test_id("run-name")).to_have_text("ui_live", timeout=60_000)
    expect(run.get_by_test_id("run-params")).to_contain_text("WHO=the browser")
    try:
        # Once the guest answers on SSH (a failed run ends the wait at once).
        page.wait_for_function("""() => {
            const run = document.querySelector('[data-testid="recipe-run"][data-name="ui_live"]');
            return run && (!['queued', 'running'].includes(run.dataset.state)
                           || run.querySelector('[data-testid="run-log"]').textContent.includes('line 2'));
        }""", timeout=240_000)
        expect(log).to_contain_text("line 2", timeout=1_000)
        expect(log).to_contain_text("line 5", timeout=60_000)
        expect(run.get_by_test_id("run-state")).to_have_text("succeeded", timeout=60_000)
    except (AssertionError, PlaywrightTimeout) as error:
        raise AssertionError(f"{error}\n{guest_report(admin, vm_id)}\n"
                             f"{guest_inside(real, private, vm_id)}") from None
    expect(run.get_by_test_id("run-exit-code")).to_have_text("exit code 0")
    expect(log).to_contain_text("counting for the browser")
    expect(log).to_contain_text("done counting")
    text = log.text_content() or ""
    positions = [text.index(f"line {i}") for i in range(1, 6)]
    assert positions == sorted(positions), text
    expect(run.get_by_test_id("run-cancel")).to_have_count(0)
    expect(page.get_by_test_id("alert")).to_be_hidden()

    # What the page showed on the way: a partial log (line 2, not yet line 5), then all.
    seen = seen_texts(page)
    partial = [i for i, t in enumerate(seen) if "line 2" in t and "line 5" not in t]
    complete = [i for i, t in enumerate(seen) if all(f"line {n}" in t for n in range(1, 6))]
    assert partial and complete and partial[0] < complete[0], seen
    screenshot(page, "vm-recipe-live-log.png")
    (stored,) = admin.get(f"/api/v1/vms/{vm_id}/recipe-runs").body["items"]
    assert stored["state"] == "succeeded" and stored["exit_code"] == 0, stored
    assert [line for line in stored["log"] if line.startswith("line ")] == \
        [f"line {i}" for i in range(1, 6)], stored["log"]


def guest_report(admin: Client, vm_id: str) -> str:
    """What the panel knows of a guest whose recipe did not get through (for a failure)."""
    runs = admin.get(f"/api/v1/vms/{vm_id}/recipe-runs").body.get("items", [])
    tasks = [admin.get(f"/api/v1/tasks/{r['task']}").body for r in runs if r.get("task")]
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    console = admin.get(f"/api/v1/vms/{vm_id}/console").body.get("text", "")
    return "\n".join([
        f"VM: state={vm.get('state')} interfaces={vm.get('interfaces')}",
        *(f"run {r['name']}: state={r['state']} exit={r.get('exit_code')} "
          f"error={r.get('error')} log={r.get('log')}" for r in runs),
        *(f"task {t.get('id')}: state={t.get('state')} error={t.get('error')} "
          f"log={t.get('log')}" for t in tasks),
        "console (tail):", console[-4000:]])


def guest_inside(real: dict[str, Any], private: str, vm_id: str) -> str:
    """dropbear's log, the kernel's last lines and the memory, from inside the guest."""
    try:
        vm = real["admin"].get(f"/api/v1/vms/{vm_id}").body
        with login({"panel": real["panel"], "private": private}, vm) as client:
            return sh(client, "cat /var/log/dropbear.log; echo ---; dmesg | tail -15; "
                              "echo ---; free")[1]
    except Exception as exc:  # noqa: BLE001
        return f"cannot look inside: {exc!r}"


def test_a_vm_without_an_os_template_cannot_run_recipes(admin_page: Page, server: str,
                                                        real: dict[str, Any]):
    page, admin = admin_page, real["admin"]
    admin.post("/api/v1/recipes", {"script": OTHER_RECIPE.format(tags=TAG)})
    task = admin.run("POST", "/api/v1/vms", {"name": "ui-plain", "vm_template":
                                             real["vm_template"]["id"],
                                             "storage": real["storage"]["id"]}, timeout=90)
    vm_id = task["result"]["vm"]
    page.goto(f"{server}/vms/{vm_id}")
    card = page.get_by_test_id("vm-recipes-card")
    expect(card.get_by_test_id("no-runs")).to_be_visible()
    expect(card.get_by_test_id("run-recipe-note")).to_contain_text(
        "was not installed from an OS template")
    expect(card.get_by_test_id("run-recipe-submit")).to_be_disabled()
    expect(page.get_by_test_id("alert")).to_be_hidden()
    # The reinstall panel says there is nothing to reinstall from.
    page.get_by_test_id("vm-reinstall").click()
    panel = page.get_by_test_id("reinstall-panel")
    expect(panel).to_be_visible()
    expect(panel.get_by_test_id("reinstall-note")).to_contain_text("No ready OS template")
    expect(panel.get_by_test_id("reinstall-submit")).to_be_disabled()
    panel.get_by_test_id("reinstall-cancel").click()
    expect(panel).to_be_hidden()


def test_a_recipe_source_is_added_refreshed_and_removed(admin_page: Page, server: str,
                                                        real: dict[str, Any], tmp_path: Path):
    page, admin = admin_page, real["admin"]
    page.on("dialog", lambda dialog: dialog.accept())
    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "one.sh").write_text(OTHER_RECIPE.format(tags=TAG))
    (folder / "broken.sh").write_text("#!/bin/sh\necho no metadata\n")
    page.get_by_test_id("nav-recipes").click()
    expect(page.get_by_test_id("no-recipe-sources")).to_be_visible()

    form = page.get_by_test_id("add-recipe-source-form")
    form.get_by_test_id("recipe-source-name").fill("ui-library")
    form.get_by_test_id("recipe-source-kind").select_option("folder")
    form.get_by_test_id("option-path").fill(str(folder))
    form.get_by_test_id("add-recipe-source-submit").click()
    expect(page.get_by_test_id("notice")).to_contain_text(
        "Recipe source ui-library added: 1 added")
    source = page.locator('[data-testid="recipe-source-row"][data-name="ui-library"]')
    expect(source.get_by_test_id("recipe-source-count")).to_have_text("1")
    expect(source).to_contain_text("broken.sh")  # skipped, with the reason
    row = page.locator('[data-testid="recipe-row"][data-name="ui_other"]')
    expect(row.get_by_test_id("recipe-origin")).to_contain_text("source ui-library")
    expect(row.get_by_test_id("recipe-delete")).to_have_count(0)  # it belongs to its source

    # The source's recipe: its script is read-only, its access may be set here.
    row.get_by_test_id("recipe-view").click()
    detail = page.get_by_test_id("recipe-detail")
    detail.get_by_test_id("recipe-edit").click()
    edit = detail.get_by_test_id("recipe-edit-form")
    expect(edit.get_by_test_id("recipe-edit-note")).to_contain_text("comes from source ui-library")
    expect(edit.get_by_test_id("recipe-edit-script")).to_be_hidden()
    edit.get_by_test_id("recipe-edit-access").select_option("nobody")
    edit.get_by_test_id("recipe-edit-save").click()
    expect(detail.get_by_test_id("recipe-detail-access")).to_have_text("nobody (disabled)")

    # A second script in the folder: Refresh adds it; the access set above stays.
    (folder / "two.sh").write_text(RECIPE.format(tags=TAG, revision=1))
    source.get_by_test_id("recipe-source-refresh").click()
    expect(page.get_by_test_id("notice")).to_contain_text(
        "Recipe source ui-library refreshed: 1 added, 0 updated, 0 removed, 1 unchanged")
    expect(source.get_by_test_id("recipe-source-count")).to_have_text("2")
    expect(page.locator('[data-testid="recipe-row"][data-name="ui_hello"]')).to_be_visible()
    expect(row.get_by_test_id("recipe-access")).to_contain_text("nobody")

    source.get_by_test_id("recipe-source-remove").click()
    expect(page.get_by_test_id("no-recipe-sources")).to_be_visible()
    expect(page.get_by_test_id("no-recipes")).to_be_visible()
    assert admin.get("/api/v1/recipes").body["items"] == []


def test_reinstall_a_vm_from_the_vm_page(admin_page: Page, server: str, real: dict[str, Any],
                                         tmp_path: Path):
    page, admin, storage = admin_page, real["admin"], real["storage"]
    page.on("dialog", lambda dialog: dialog.accept())
    image = make_image(tmp_path / "base.qcow2", "qcow2")
    first = upload_template(admin, storage["id"], image, "ui-first", [TAG])
    second = upload_template(admin, storage["id"], image, "ui-second", [TAG])
    hello = admin.post("/api/v1/recipes", {"script": RECIPE.format(tags=TAG, revision=1)}).body
    task = admin.run("POST", "/api/v1/vms", {"name": "ui-reinstall", "vm_template":
                                             real["vm_template"]["id"],
                                             "os_template": first["id"]}, timeout=90)
    vm_id = task["result"]["vm"]
    page.goto(f"{server}/vms/{vm_id}")
    expect(page.get_by_test_id("run-recipe-select").locator("option")).to_have_count(2)

    page.get_by_test_id("vm-reinstall").click()
    panel = page.get_by_test_id("reinstall-panel")
    expect(panel).to_be_visible()
    select = panel.get_by_test_id("reinstall-template")
    expect(select).to_have_value(first["id"])  # the VM's own template first
    select.select_option(second["id"])
    panel.get_by_test_id("reinstall-recipe").select_option(hello["id"])
    params = panel.get_by_test_id("reinstall-recipe-params")
    expect(params.get_by_test_id("option-DB_PASSWORD")).to_have_attribute("type", "password")
    panel.get_by_test_id("reinstall-recipe").select_option("")  # no recipe after all
    expect(params).to_be_hidden()
    panel.get_by_test_id("reinstall-password").fill("new-root-password")
    key = ssh_public_key()
    panel.get_by_test_id("reinstall-ssh-keys").fill(key)
    with page.expect_request(lambda r: r.url.endswith(f"/vms/{vm_id}/actions/reinstall")) as sent:
        panel.get_by_test_id("reinstall-submit").click()
    assert sent.value.post_data_json == {"os_template": second["id"], "ssh_keys": [key],
                                         "password": "new-root-password"}
    expect(panel).to_be_hidden()
    expect(page.get_by_test_id("notice")).to_contain_text(
        "ui-reinstall was reinstalled from ui-second", timeout=90_000)
    expect(page.get_by_test_id("last-task")).to_contain_text("Reinstall VM ui-reinstall")
    vm = admin.get(f"/api/v1/vms/{vm_id}").body
    assert vm["os_template"] == second["id"] and vm["state"] == "running"
    page.get_by_test_id("vm-reinstall").click()
    expect(panel.get_by_test_id("reinstall-password")).to_have_value("")  # not kept
    panel.get_by_test_id("reinstall-close").click()
    expect(panel).to_be_hidden()
