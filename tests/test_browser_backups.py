"""The backup UI in a real Chromium (Playwright) against a real panel on the real libvirtd.

The panel runs on qemu:///system with a dir storage of its own and one small VM (1 GiB qcow2
disk holding 16 MiB of random data written with ``qemu-io``; the VM never boots: a stopped
VM is backed up with its domain started paused for the copy). Backup targets are ``local``
folders under pytest's temporary folders, and a real FTP server (pyftpdlib, in its own
process) for the target whose password must never be shown. The VM belongs to a plain user,
so the user's read-only view of its backups is tested with the same VM.

Fixtures come from tests/support/browser.py, imported by name (hence F811 below). Every test
asks for the server before the page, so the page closes before the server stops.
"""
# ruff: noqa: F811

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.support.browser import (  # noqa: F401  (fixtures are used by name)
    admin_page,
    browser_context_args,
    browser_type_launch_args,
    js_errors,
    screenshot,
    sign_in,
)
from tests.support.client import Client

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # slow: the real libvirtd

MIB = 1024 * 1024
DATA_MIB = 16
USER, USER_PASSWORD = "bea", "bea-password-1"
BACKUP_TIMEOUT_MS = 120_000
# "42% · 3.0 MiB of 16.0 MiB · 12.5 MiB/s": percent, bytes and throughput of a transfer.
TRANSFER = re.compile(r"\d+% · [\d.]+ [KMG]?i?B of [\d.]+ [KMG]?i?B · [\d.]+ [KMG]?i?B/s")
PAGES = [("/backups", "backups", "Backups"),
         ("/backup-schedules", "backup_schedules", "Backup schedules"),
         ("/backup-targets", "backup_targets", "Backup targets")]


# -- the panel on the real libvirtd ---------------------------------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A served panel on qemu:///system: a dir storage, a VM template, a plain user and her
    stopped VM whose disk holds 16 MiB of data."""
    from tests.support.realvirt import ensure_libvirtd, served_panel

    uri = ensure_libvirtd()
    tag = uuid.uuid4().hex[:6]
    pool = Path(f"/var/lib/libvirt/images/hvp-uibk-{tag}")
    root = tmp_path_factory.mktemp("uibk")
    with served_panel(root / "data", uri) as (panel, admin):
        storage = admin.post("/api/v1/storages", {"name": f"uibk-{tag}", "backend": "dir",
                                                  "options": {"path": str(pool)}})
        assert storage.status == 201, storage
        template = admin.post("/api/v1/vm-templates", {"name": f"bk-tiny-{tag}",
                                                       "memory_mib": 128, "vcpus": 1,
                                                       "disk_gib": 1})
        assert template.status == 201, template
        user = admin.post("/api/v1/users", {"name": USER, "password": USER_PASSWORD,
                                            "role": "user"})
        assert user.status == 201, user
        vm: dict[str, Any] | None = None
        try:
            task = admin.run("POST", "/api/v1/vms", {
                "name": f"bk-vm-{tag}", "vm_template": template.body["id"],
                "storage": storage.body["id"], "owner": user.body["id"]}, timeout=180)
            vm = admin.get(f"/api/v1/vms/{task['result']['vm']}").body
            write_data(pool / vm["disks"][0]["volume"], root / "random.bin")
            yield {"panel": panel, "admin": admin, "server": admin.base, "tag": tag,
                   "storage": storage.body, "vm_template": template.body, "vm": vm,
                   "user": user.body, "pool": pool, "root": root}
        finally:
            wipe(admin, vm["id"] if vm else None)
            if vm:
                resp = admin.delete(f"/api/v1/vms/{vm['id']}")
                if resp.status == 202:
                    admin.wait_task(resp.body["task"]["id"], timeout=120)
            remove_volumes(admin, storage.body["id"], keep=set())
            admin.delete(f"/api/v1/users/{user.body['id']}")
            admin.delete(f"/api/v1/vm-templates/{template.body['id']}")
            assert admin.delete(f"/api/v1/storages/{storage.body['id']}").status == 204
            subprocess.run(["rm", "-rf", str(pool)], check=False)


def write_data(volume: Path, scratch: Path) -> None:
    """16 MiB of random data at the start of the VM's (stopped, unlocked) qcow2 disk."""
    scratch.write_bytes(os.urandom(DATA_MIB * MIB))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                    f"write -s {scratch} 0 {DATA_MIB}M", str(volume)],
                   check=True, capture_output=True)
    scratch.unlink()


@pytest.fixture(scope="module")
def server(real: dict[str, Any]) -> str:
    """The pages of this module are served by the real-libvirtd panel."""
    return real["server"]


@pytest.fixture(autouse=True)
def tidy(real: dict[str, Any]) -> Iterator[None]:
    """Each test starts and ends with no backups, schedules, targets or extra VMs."""
    wipe(real["admin"], real["vm"]["id"])
    yield
    wipe(real["admin"], real["vm"]["id"])


def wipe(admin: Client, keep_vm: str | None) -> None:
    """Remove what the tests made: tasks, schedules, backups, targets, VMs, their volumes."""
    for state in ("running", "queued"):
        for task in admin.get(f"/api/v1/tasks?state={state}").body["items"]:
            admin.wait_task(task["id"], timeout=180)
    for schedule in admin.get("/api/v1/backup-schedules").body["items"]:
        assert admin.delete(f"/api/v1/backup-schedules/{schedule['id']}").status == 204
    for _ in range(20):  # newest first: an incremental goes before the backup it builds on
        backups = admin.get("/api/v1/backups").body["items"]
        if not backups:
            break
        for backup in backups:
            admin.delete(f"/api/v1/backups/{backup['id']}")
    for target in admin.get("/api/v1/backup-targets").body["items"]:
        resp = admin.delete(f"/api/v1/backup-targets/{target['id']}")
        assert resp.status == 204, resp
    keep: set[str] = set()
    for vm in admin.get("/api/v1/vms").body["items"]:
        if vm["id"] == keep_vm:
            keep = {d["volume"] for d in vm.get("disks", [])}
            continue
        resp = admin.delete(f"/api/v1/vms/{vm['id']}")
        if resp.status == 202:
            admin.wait_task(resp.body["task"]["id"], timeout=120)
    storages = admin.get("/api/v1/storages").body["items"]
    for storage in storages:
        remove_volumes(admin, storage["id"], keep)
    leftovers = {
        "backups": admin.get("/api/v1/backups").body["items"],
        "schedules": admin.get("/api/v1/backup-schedules").body["items"],
        "targets": admin.get("/api/v1/backup-targets").body["items"],
        "vms": [v["name"] for v in admin.get("/api/v1/vms").body["items"] if v["id"] != keep_vm]}
    assert not any(leftovers.values()), leftovers


def remove_volumes(admin: Client, storage_id: str, keep: set[str]) -> None:
    volumes = f"/api/v1/storages/{storage_id}/volumes"
    for volume in admin.get(volumes).body["items"]:
        if volume["name"] not in keep:
            admin.delete(f"{volumes}/{volume['name']}")


def fmt_bytes(size: float) -> str:
    """The page's fmtBytes (dom.js): "16 MiB", "16.1 MiB", "512 B"."""
    units, unit = ["B", "KiB", "MiB", "GiB", "TiB"], 0
    while abs(size) >= 1024 and unit < len(units) - 1:
        size, unit = size / 1024, unit + 1
    digits = 0 if unit == 0 or size >= 100 or float(size).is_integer() else 1
    return f"{size:.{digits}f} {units[unit]}"


def local_target(admin: Client, folder: Path, name: str = "disk") -> dict[str, Any]:
    made = admin.post("/api/v1/backup-targets", {"name": name, "backend": "local",
                                                 "options": {"path": str(folder)}})
    assert made.status == 201, made
    return made.body


def record_texts(page: Page, *testids: str) -> None:
    """Keep every text the elements with these test ids show (to see passing progress)."""
    selector = ", ".join(f'[data-testid="{t}"]' for t in testids)
    page.evaluate("""(selector) => {
        window.hvpSeen = [];
        const look = () => {
            for (const node of document.querySelectorAll(selector)) {
                const text = node.textContent;
                if (text && !window.hvpSeen.includes(text)) window.hvpSeen.push(text);
            }
        };
        new MutationObserver(look).observe(document.body,
            {subtree: true, childList: true, characterData: true, attributes: true});
    }""", selector)


def seen_texts(page: Page) -> list[str]:
    return page.evaluate("() => window.hvpSeen")


def task_entry(page: Page, kind: str) -> Locator:
    return page.locator(f'[data-testid="backup-task"][data-kind="{kind}"]').first


def expect_succeeded(entry: Locator) -> None:
    expect(entry.get_by_test_id("backup-task-state")).to_have_text(
        re.compile("succeeded|failed"), timeout=BACKUP_TIMEOUT_MS)
    expect(entry.get_by_test_id("backup-task-error")).to_have_count(0)
    expect(entry.get_by_test_id("backup-task-state")).to_have_text("succeeded")


def accept_dialogs(page: Page) -> None:
    page.on("dialog", lambda dialog: dialog.accept())


def create_local_target_in_the_form(page: Page, server: str, name: str, folder: Path) -> None:
    page.goto(f"{server}/backup-targets")
    form = page.get_by_test_id("create-target-form")
    expect(form.get_by_test_id("target-backend")).to_have_value("local")
    form.get_by_test_id("target-name").fill(name)
    form.get_by_test_id("option-path").fill(str(folder))  # the local plugin's schema: path
    form.get_by_test_id("create-target-submit").click()
    expect(page.locator(f'[data-testid="target-row"][data-name="{name}"]')).to_be_visible()


# -- the pages -------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "key", "heading"), PAGES)
def test_the_backup_pages_render_without_script_errors(admin_page: Page, server: str,
                                                       path: str, key: str, heading: str):
    page = admin_page
    page.get_by_test_id(f"nav-{key}").click()
    expect(page).to_have_url(re.compile(f"{path}$"))
    expect(page.locator("h1").first).to_have_text(heading)
    expect(page.get_by_test_id(f"nav-{key}")).to_have_class("active")
    expect(page.get_by_test_id("alert")).to_be_hidden()
    expect(page.locator("main")).not_to_contain_text("Loading…")


def test_a_local_target_is_added_through_its_schema_form_checked_and_deleted(
        admin_page: Page, server: str, real: dict[str, Any], tmp_path: Path):
    page, admin = admin_page, real["admin"]
    accept_dialogs(page)
    page.goto(f"{server}/backup-targets")
    expect(page.get_by_test_id("no-targets")).to_be_visible()
    form = page.get_by_test_id("create-target-form")
    # The form comes from the plugin's options_schema: its title, description and required.
    expect(form.get_by_test_id("field-path")).to_contain_text("Folder")
    expect(form.get_by_test_id("field-path")).to_contain_text("system folders are refused")
    expect(form.get_by_test_id("option-path")).to_have_attribute("required", "")
    # A refused folder: the check's message, and nothing is kept.
    form.get_by_test_id("target-name").fill("bad")
    form.get_by_test_id("option-path").fill("/etc/hvp-backups")
    form.get_by_test_id("create-target-submit").click()
    expect(page.get_by_test_id("alert")).to_contain_text("system folder /etc")
    expect(page.get_by_test_id("no-targets")).to_be_visible()
    assert admin.get("/api/v1/backup-targets").body["items"] == []

    folder = tmp_path / "local-target"
    form.get_by_test_id("target-name").fill("disk")
    form.get_by_test_id("option-path").fill(str(folder))
    form.get_by_test_id("target-description").fill("<b>bold?</b>")
    form.get_by_test_id("create-target-submit").click()
    row = page.locator('[data-testid="target-row"][data-name="disk"]')
    expect(row).to_contain_text("local")
    expect(row.get_by_test_id("target-option-path")).to_have_text(f"Folder: {folder}")
    expect(row).to_contain_text("<b>bold?</b>")  # text, never HTML
    expect(page.get_by_test_id("alert")).to_be_hidden()
    assert folder.is_dir()
    row.get_by_test_id("target-check").click()
    expect(row.get_by_test_id("target-check-state")).to_have_text("ok")
    expect(row.get_by_test_id("target-check-message")).to_have_text("reachable and writable")
    expect(row.get_by_test_id("target-free")).to_contain_text("free")
    row.get_by_test_id("target-delete").click()
    expect(page.get_by_test_id("no-targets")).to_be_visible()
    assert admin.get("/api/v1/backup-targets").body["items"] == []


def test_an_ftp_targets_password_is_stored_but_only_shown_as_set(
        admin_page: Page, server: str, real: dict[str, Any], tmp_path: Path):
    from tests.support.ftpserver import FtpServer

    page, admin = admin_page, real["admin"]
    with FtpServer(tmp_path / "ftp") as ftp:
        page.goto(f"{server}/backup-targets")
        form = page.get_by_test_id("create-target-form")
        form.get_by_test_id("target-backend").select_option("ftp")
        expect(form.get_by_test_id("option-password")).to_have_attribute("type", "password")
        form.get_by_test_id("target-name").fill("remote")
        form.get_by_test_id("option-host").fill("127.0.0.1")
        form.get_by_test_id("option-port").fill(str(ftp.port))
        form.get_by_test_id("option-username").fill(ftp.user)
        form.get_by_test_id("option-password").fill(ftp.password)
        form.get_by_test_id("option-path").fill("/ui-archives")
        form.get_by_test_id("create-target-submit").click()
        row = page.locator('[data-testid="target-row"][data-name="remote"]')
        expect(row.get_by_test_id("target-secret-password")).to_have_text("Password: set")
        expect(row.get_by_test_id("target-option-host")).to_have_text("Host: 127.0.0.1")
        assert ftp.password not in page.content()
        row.get_by_test_id("target-check").click()
        expect(row.get_by_test_id("target-check-state")).to_have_text("ok")
        page.reload()
        expect(row.get_by_test_id("target-secret-password")).to_have_text("Password: set")
        assert ftp.password not in page.content()
        listed = admin.get("/api/v1/backup-targets").body["items"]
        assert [t["secrets_set"] for t in listed] == [["password"]]
        assert ftp.password not in str(listed)
        target_id = listed[0]["id"]
        assert admin.delete(f"/api/v1/backup-targets/{target_id}").status == 204


# -- back up, verify, restore, download and delete ----------------------------------------------
def test_back_up_a_vm_from_its_page_then_verify_restore_and_delete_from_the_backups_page(
        admin_page: Page, server: str, real: dict[str, Any], tmp_path: Path):
    page, admin, vm = admin_page, real["admin"], real["vm"]
    accept_dialogs(page)
    create_local_target_in_the_form(page, server, "disk", tmp_path / "archives")

    # -- the VM page: back up now (full), then again (auto: an incremental one) --------
    page.goto(f"{server}/vms/{vm['id']}")
    card = page.get_by_test_id("vm-backups-card")
    expect(card.get_by_test_id("no-vm-backups")).to_be_visible()
    form = card.get_by_test_id("vm-backup-form")
    expect(form.get_by_test_id("vm-backup-target")).to_contain_text("disk (local)")
    record_texts(page, "backup-progress-text")
    form.get_by_test_id("vm-backup-mode").select_option("full")
    form.get_by_test_id("vm-backup-submit").click()
    expect_succeeded(task_entry(page, "backup.vm"))
    rows = card.get_by_test_id("backup-row")
    expect(rows).to_have_count(1)
    full = admin.get(f"/api/v1/backups?vm={vm['id']}").body["items"][0]
    assert full["type"] == "full" and full["data_bytes"] >= DATA_MIB * MIB
    expect(rows.first.get_by_test_id("backup-type")).to_have_text("full")
    size = rows.first.get_by_test_id("backup-size")
    expect(size).to_contain_text(fmt_bytes(full["size"]))
    expect(size).to_contain_text(f"{fmt_bytes(full['data_bytes'])} of data")
    # The transfer showed percent, bytes and throughput while it ran (and when it ended).
    assert any(TRANSFER.search(t) for t in seen_texts(page)), seen_texts(page)
    # A backup lets the VM stay stopped (it ran paused for the copy only).
    expect(page.get_by_test_id("vm-state")).to_have_text("stopped")

    form.get_by_test_id("vm-backup-mode").select_option("auto")
    form.get_by_test_id("vm-backup-submit").click()
    expect(rows).to_have_count(2, timeout=BACKUP_TIMEOUT_MS)
    expect_succeeded(task_entry(page, "backup.vm"))
    expect(card.locator('[data-testid="backup-row"][data-type="incremental"]')).to_have_count(1)
    incremental = admin.get(f"/api/v1/backups?vm={vm['id']}").body["items"][0]
    assert incremental["type"] == "incremental" and incremental["parent"] == full["id"]

    # -- the backups page (this VM's, from its link): by VM, then by target; verify --------
    card.get_by_test_id("vm-backups-all").click()
    expect(page).to_have_url(re.compile(f"/backups\\?vm={vm['id']}$"))
    expect(page.get_by_test_id("backup-filter-vm")).to_have_value(vm["id"])
    page.get_by_test_id("backup-filter-vm").select_option("")
    group = page.locator(f'[data-testid="backup-group"][data-key="{vm["id"]}"]')
    expect(group.get_by_test_id("backup-group-title")).to_contain_text(vm["name"])
    expect(group.get_by_test_id("backup-row")).to_have_count(2)
    page.get_by_test_id("backup-group-by").select_option("target")
    by_target = page.locator('[data-testid="backup-group"][data-name="disk"]')
    expect(by_target.get_by_test_id("backup-row")).to_have_count(2)
    expect(by_target.get_by_test_id("backup-vm").first).to_have_text(vm["name"])
    page.get_by_test_id("backup-group-by").select_option("vm")
    full_row = page.locator(f'[data-testid="backup-row"][data-backup-id="{full["id"]}"]')
    inc_row = page.locator(f'[data-testid="backup-row"][data-backup-id="{incremental["id"]}"]')
    expect(inc_row.get_by_test_id("backup-verified")).to_have_text("not verified")
    record_texts(page, "backup-progress-text")
    inc_row.get_by_test_id("backup-verify").click()
    verify = task_entry(page, "backup.verify")
    expect_succeeded(verify)
    expect(verify.get_by_test_id("verify-ok")).to_contain_text("2 archive(s)")  # the chain
    expect(inc_row.get_by_test_id("backup-verified")).to_have_text("verified")
    assert any(re.search(r"100% · .+ · .+/s", t) for t in seen_texts(page)), seen_texts(page)

    # -- the download link serves the archive ---------------------------------------------
    href = inc_row.get_by_test_id("backup-download").get_attribute("href")
    assert href == f"/api/v1/backups/{incremental['id']}/content"
    download = page.request.get(server + href)
    assert download.status == 200 and len(download.body()) == incremental["size"]

    # -- restore the incremental one as a new VM -----------------------------------------
    inc_row.get_by_test_id("backup-restore").click()
    panel = page.get_by_test_id("restore-panel")
    expect(panel.get_by_test_id("restore-title")).to_contain_text(incremental["name"])
    expect(panel.get_by_test_id("restore-mode-replace")).to_be_checked()
    panel.get_by_test_id("restore-mode-new").check()
    new_name = f"bk-restored-{real['tag']}"
    panel.get_by_test_id("restore-name").fill(new_name)
    panel.get_by_test_id("restore-node").select_option(vm["node"])
    panel.get_by_test_id("restore-storage").select_option(real["storage"]["id"])
    record_texts(page, "backup-progress-text")
    panel.get_by_test_id("restore-submit").click()
    expect(panel).to_be_hidden()
    restore = task_entry(page, "backup.restore")
    expect_succeeded(restore)
    assert any(TRANSFER.search(t) for t in seen_texts(page)), seen_texts(page)
    restored = [v for v in admin.get("/api/v1/vms").body["items"] if v["name"] == new_name]
    assert len(restored) == 1 and restored[0]["storage"] == real["storage"]["id"]
    restore.get_by_test_id("restored-vm-link").click()
    expect(page).to_have_url(re.compile(f"/vms/{restored[0]['id']}$"))
    expect(page.get_by_test_id("vm-title")).to_have_text(new_name)

    # -- delete: the full one is the base of the incremental one --------------------------
    page.goto(f"{server}/backups")
    full_row.get_by_test_id("backup-delete").click()
    expect(page.get_by_test_id("alert")).to_contain_text("delete them first")
    expect(page.get_by_test_id("alert-code")).to_have_text("backup_in_use")
    inc_row.get_by_test_id("backup-delete").click()
    expect(inc_row).to_have_count(0)
    full_row.get_by_test_id("backup-delete").click()
    expect(page.get_by_test_id("no-backups")).to_be_visible()
    assert admin.get("/api/v1/backups").body["items"] == []
    assert not list((tmp_path / "archives").rglob("*.hvpbak"))


def test_verify_and_restore_in_place_from_the_vm_page(admin_page: Page, server: str,
                                                     real: dict[str, Any], tmp_path: Path):
    page, admin, vm = admin_page, real["admin"], real["vm"]
    accept_dialogs(page)  # "Replace the disks of ...?"
    target = local_target(admin, tmp_path / "in-place")
    task = admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/backup",
                     {"target": target["id"], "mode": "full"}, timeout=180)
    backup_id = task["result"]["backup"]
    before = admin.get(f"/api/v1/vms/{vm['id']}").body["disks"][0]["volume"]
    page.goto(f"{server}/vms/{vm['id']}")
    card = page.get_by_test_id("vm-backups-card")
    row = card.locator(f'[data-testid="backup-row"][data-backup-id="{backup_id}"]')
    expect(row.get_by_test_id("backup-type")).to_have_text("full")
    row.get_by_test_id("backup-verify").click()
    expect_succeeded(task_entry(page, "backup.verify"))
    expect(row.get_by_test_id("backup-verified")).to_have_text("verified")

    row.get_by_test_id("backup-restore").click()
    panel = card.get_by_test_id("restore-panel")
    expect(panel.get_by_test_id("restore-mode-replace")).to_be_checked()
    expect(panel.get_by_test_id("restore-new-fields")).to_be_hidden()
    panel.get_by_test_id("restore-submit").click()
    expect_succeeded(task_entry(page, "backup.restore"))
    after = admin.get(f"/api/v1/vms/{vm['id']}").body
    assert after["disks"][0]["volume"] != before, after  # a new volume, swapped in
    assert after["state"] == "stopped"
    expect(page.get_by_test_id("disk-row")).to_contain_text(after["disks"][0]["volume"])
    expect(page.get_by_test_id("vm-state")).to_have_text("stopped")
    volumes = admin.get(f"/api/v1/storages/{real['storage']['id']}/volumes").body["items"]
    assert before not in {v["name"] for v in volumes}  # the old disk is gone


def test_back_up_the_panel_from_the_backups_page(admin_page: Page, server: str,
                                                 real: dict[str, Any], tmp_path: Path):
    page, admin = admin_page, real["admin"]
    accept_dialogs(page)
    target = local_target(admin, tmp_path / "panel-archives")
    page.goto(f"{server}/backups")
    form = page.get_by_test_id("panel-backup-form")
    expect(form.get_by_test_id("panel-backup-target")).to_have_value(target["id"])
    form.get_by_test_id("panel-backup-passphrase").fill("a long passphrase")
    form.get_by_test_id("panel-backup-submit").click()
    expect_succeeded(task_entry(page, "backup.panel"))
    group = page.locator('[data-testid="backup-group"][data-key="panel"]')
    row = group.get_by_test_id("backup-row")
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("backup-encrypted")).to_have_text("encrypted")
    # An encrypted panel backup asks for its passphrase before it is verified.
    row.get_by_test_id("backup-verify").click()
    panel = page.get_by_test_id("restore-panel")
    panel.get_by_test_id("restore-passphrase").fill("a long passphrase")
    panel.get_by_test_id("restore-submit").click()
    expect_succeeded(task_entry(page, "backup.verify"))
    expect(row.get_by_test_id("backup-verified")).to_have_text("verified")
    page.get_by_test_id("backup-filter-kind").select_option("vm")
    expect(page.get_by_test_id("no-backups")).to_be_visible()
    page.get_by_test_id("backup-filter-kind").select_option("panel")
    row.get_by_test_id("backup-delete").click()
    expect(page.get_by_test_id("no-backups")).to_be_visible()


# -- schedules -------------------------------------------------------------------------------
def test_a_schedule_is_created_edited_paused_run_and_deleted_through_the_form(
        admin_page: Page, server: str, real: dict[str, Any], tmp_path: Path):
    page, admin, vm = admin_page, real["admin"], real["vm"]
    accept_dialogs(page)
    target = local_target(admin, tmp_path / "scheduled")
    page.goto(f"{server}/backup-schedules")
    expect(page.get_by_test_id("no-schedules")).to_be_visible()
    form = page.get_by_test_id("schedule-form")
    form.get_by_test_id("schedule-name").fill("nightly")
    expect(form.get_by_test_id("schedule-target")).to_have_value(target["id"])
    form.get_by_test_id("schedule-cron").fill("15 3 * * *")
    form.get_by_test_id("schedule-vms-mode").select_option("list")
    form.locator(f'[data-testid="vm_ids-{vm["name"]}"]').check()
    form.get_by_test_id("schedule-full-every").fill("4")
    form.get_by_test_id("schedule-keep_last").fill("3")
    form.get_by_test_id("schedule-keep_daily").fill("7")
    form.get_by_test_id("schedule-missed").select_option("skip")
    form.get_by_test_id("schedule-submit").click()
    row = page.locator('[data-testid="schedule-row"][data-name="nightly"]')
    expect(row.get_by_test_id("schedule-when-text")).to_have_text("15 3 * * * UTC")
    expect(row.get_by_test_id("schedule-what-text")).to_have_text(f"VMs: {vm['name']}")
    expect(row.get_by_test_id("schedule-target-name")).to_have_text("disk")
    expect(row.get_by_test_id("schedule-retention")).to_have_text("keep last 3, daily 7")
    expect(row).to_contain_text("full every 4")
    [stored] = admin.get("/api/v1/backup-schedules").body["items"]
    assert stored["vms"] == {"mode": "list", "ids": [vm["id"]]} and stored["missed"] == "skip"
    assert stored["retention"] == {"keep_last": 3, "keep_daily": 7}
    assert stored["next_run"] and time.gmtime(stored["next_run"])[3:5] == (3, 15)
    next_run = row.get_by_test_id("schedule-next-run")
    expect(next_run).to_have_attribute("data-at", str(stored["next_run"]).removesuffix(".0"))
    expect(next_run).not_to_have_text("not planned")

    # Edit: every 90 minutes, the panel too.
    row.get_by_test_id("schedule-edit").click()
    expect(page.get_by_test_id("schedule-form-title")).to_have_text("Edit schedule nightly")
    expect(form.get_by_test_id("schedule-name")).to_be_disabled()
    expect(form.get_by_test_id("schedule-keep_last")).to_have_value("3")
    form.get_by_test_id("schedule-when-interval").check()
    form.get_by_test_id("schedule-interval").fill("90")
    form.get_by_test_id("schedule-panel").check()
    form.get_by_test_id("schedule-submit").click()
    expect(row.get_by_test_id("schedule-when-text")).to_have_text("every 90 min")
    expect(row.get_by_test_id("schedule-what-text")).to_have_text(f"VMs: {vm['name']} + the panel")
    expect(page.get_by_test_id("schedule-form-title")).to_have_text("Add a schedule")
    [stored] = admin.get("/api/v1/backup-schedules").body["items"]
    assert stored["interval_minutes"] == 90 and stored["cron"] is None and stored["panel"]
    assert stored["retention"] == {"keep_last": 3, "keep_daily": 7}

    # Pause and resume.
    row.get_by_test_id("schedule-pause").click()
    expect(row.get_by_test_id("schedule-state")).to_have_text("paused")
    assert admin.get(f"/api/v1/backup-schedules/{stored['id']}").body["next_run"] is None
    row.get_by_test_id("schedule-resume").click()
    expect(row.get_by_test_id("schedule-pause")).to_be_visible()
    expect(row.get_by_test_id("schedule-next-run")).not_to_have_text("not planned")

    # Run now: a task that backs up the VM and the panel.
    row.get_by_test_id("schedule-run").click()
    expect_succeeded(task_entry(page, "backup.schedule"))
    expect(row.get_by_test_id("schedule-last-state")).to_have_text("succeeded")
    made = admin.get("/api/v1/backups").body["items"]
    assert sorted(b["kind"] for b in made) == ["panel", "vm"]
    assert all(b["schedule"] == stored["id"] for b in made)

    row.get_by_test_id("schedule-delete").click()
    expect(page.get_by_test_id("no-schedules")).to_be_visible()
    assert admin.get("/api/v1/backup-schedules").body["items"] == []
    assert len(admin.get("/api/v1/backups").body["items"]) == 2  # its backups stay


def test_a_bad_cron_expression_is_refused_with_a_readable_error(admin_page: Page, server: str,
                                                                real: dict[str, Any],
                                                                tmp_path: Path):
    page, admin = admin_page, real["admin"]
    local_target(admin, tmp_path / "cron")
    page.goto(f"{server}/backup-schedules")
    form = page.get_by_test_id("schedule-form")
    form.get_by_test_id("schedule-name").fill("broken")
    form.get_by_test_id("schedule-cron").fill("61 * * * *")
    form.get_by_test_id("schedule-submit").click()
    expect(page.get_by_test_id("alert")).to_contain_text("bad cron expression")
    expect(page.get_by_test_id("no-schedules")).to_be_visible()


# -- a plain user ---------------------------------------------------------------------------
def test_a_plain_user_sees_her_vms_backups_and_no_admin_forms(server: str, page: Page,
                                                              js_errors: list[str],
                                                              real: dict[str, Any],
                                                              tmp_path: Path):
    admin, vm = real["admin"], real["vm"]
    target = local_target(admin, tmp_path / "users")
    task = admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/backup",
                     {"target": target["id"], "mode": "full"}, timeout=180)
    assert task["state"] == "succeeded", task
    panel_task = admin.run("POST", "/api/v1/backups", {"target": target["id"]}, timeout=180)
    assert panel_task["state"] == "succeeded", panel_task

    sign_in(page, server, USER, USER_PASSWORD)
    expect(page.get_by_test_id("user-role")).to_have_text("user")
    expect(page.get_by_test_id("nav-backups")).to_be_visible()
    expect(page.get_by_test_id("nav-backup_schedules")).to_have_count(0)
    expect(page.get_by_test_id("nav-backup_targets")).to_have_count(0)
    page.get_by_test_id("nav-backups").click()
    expect(page.get_by_test_id("backups-read-only")).to_be_visible()
    rows = page.get_by_test_id("backup-row")
    expect(rows).to_have_count(1)  # her VM's backup; the panel's is not hers
    expect(page.get_by_test_id("backup-group-title")).to_contain_text(vm["name"])
    expect(page.get_by_test_id("alert")).to_be_hidden()
    expect(rows.first.get_by_test_id("backup-type")).to_have_text("full")
    for testid in ("backup-verify", "backup-restore", "backup-download", "backup-delete",
                   "panel-backup-form", "restore-panel", "backup-filter-kind"):
        expect(page.get_by_test_id(testid)).to_have_count(0)
    page.goto(f"{server}/vms/{vm['id']}")
    card = page.get_by_test_id("vm-backups-card")
    expect(card.get_by_test_id("backup-row")).to_have_count(1)
    expect(card.get_by_test_id("backup-size")).to_contain_text("MiB of data")
    for testid in ("vm-backup-form", "backup-verify", "backup-restore", "restore-panel"):
        expect(card.get_by_test_id(testid)).to_have_count(0)
    expect(page.get_by_test_id("alert")).to_be_hidden()
    for path in ("/backup-schedules", "/backup-targets"):
        page.goto(server + path)
        expect(page.get_by_test_id("admin-only")).to_be_visible()
        expect(page.locator("form#schedule-form, form#create-target")).to_have_count(0)
    expect(page.get_by_test_id("alert")).to_be_hidden()
