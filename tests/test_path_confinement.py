"""Host paths plugins take (dir storages, NFS mount points, backup folders) and direct-boot
kernels are confined: system folders, libvirt's state and the panel's data are refused with
a 4xx and nothing changes (issue 12, section 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypervisor_panel_plugins.storage_nfs.backend import NFSStorage

from hypervisor_panel.errors import Invalid
from hypervisor_panel.panel import Panel
from hypervisor_panel.paths import boot_path_problem, check_host_path
from tests.support.api import assert_error, small_template, snapshot
from tests.support.client import Client

REFUSED = [
    "relative", "./x", "/", "/etc", "/etc/hvp", "/etc/", "//etc", "/bin", "/sbin/x", "/usr",
    "/usr/local/vm", "/lib", "/lib64/x", "/libx32", "/boot", "/boot/vm", "/dev/shm/x",
    "/proc/1", "/sys/x", "/run/x", "/root", "/root/vm", "/var/lib/dpkg", "/var/lib/apt/x",
    "/var/log", "/var/log/vm", "/home", "/tmp", "/var", "/var/lib", "/var/lib/libvirt",
    "/var/lib/libvirt/qemu", "/var/lib/libvirt/dnsmasq/x", "/var/lib/libvirt/boot",
    "/srv/../etc", "/srv/./vm", "/srv/x/..", "",
]
ALLOWED = ["/var/lib/libvirt/images", "/var/lib/libvirt/images/hvp", "/srv/vm", "/home/vm",
           "/tmp/hvp-x", "/data/vm", "/mnt/nas/vm", "/var/lib/hvp-images"]


@pytest.mark.parametrize("path", REFUSED)
def test_system_folders_and_odd_paths_are_refused(path: str):
    with pytest.raises(Invalid) as err:
        check_host_path(path, "a storage directory")
    assert err.value.code == "path_refused" and err.value.status == 422


@pytest.mark.parametrize("path", ALLOWED)
def test_ordinary_folders_are_allowed(path: str):
    assert check_host_path(path, "a storage directory") == path


def test_symlinks_are_followed_and_the_data_dir_is_refused(panel: Panel, tmp_path: Path):
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    with pytest.raises(Invalid, match=r"resolved: /etc/vm\).*system folder /etc"):
        check_host_path(str(link / "vm"), "a storage directory")
    data = panel.data_dir
    for path in (data, data / "secrets", data / "ssh" / "x", data / "guest-keys"):
        with pytest.raises(Invalid, match="panel's own data"):
            check_host_path(str(path), "a storage directory")
    assert check_host_path(str(data / "images"), "a storage directory")  # a folder of its own
    assert check_host_path(str(tmp_path / "elsewhere"), "x") == str(tmp_path / "elsewhere")


def _pools(panel: Panel) -> set[str]:
    node = panel.nodes.all()[0]
    conn = panel.nodes.connection(node["id"]).get()
    return {p.name() for p in conn.listAllStoragePools()}


@pytest.mark.parametrize("path", ["/etc", "/var/lib/libvirt/qemu", "/usr/share/x", "/boot"])
def test_a_dir_storage_in_a_system_folder_is_refused_and_nothing_changes(
        admin: Client, panel: Panel, path: str):
    before, pools = snapshot(admin), _pools(panel)
    resp = admin.post("/api/v1/storages", {"name": "bad", "backend": "dir",
                                           "options": {"path": path}})
    assert_error(resp, 422, "path_refused")
    assert path in resp.body["error"]["message"]
    assert snapshot(admin) == before and _pools(panel) == pools


def test_a_dir_storage_through_a_symlink_into_etc_is_refused(admin: Client, panel: Panel,
                                                             tmp_path: Path):
    link = tmp_path / "images-link"
    link.symlink_to("/etc")
    before, pools = snapshot(admin), _pools(panel)
    resp = admin.post("/api/v1/storages", {"name": "bad", "backend": "dir",
                                           "options": {"path": str(link)}})
    assert_error(resp, 422, "path_refused")
    assert snapshot(admin) == before and _pools(panel) == pools


def test_a_dir_storage_in_an_ordinary_folder_still_works(admin: Client, tmp_path: Path):
    made = admin.post("/api/v1/storages", {"name": "fine", "backend": "dir",
                                           "options": {"path": str(tmp_path / "vm")}})
    assert made.status == 201, made
    assert admin.delete(f"/api/v1/storages/{made.body['id']}").status == 204


def test_nfs_mount_points_are_confined_too():
    with pytest.raises(Invalid, match="NFS mount point"):
        NFSStorage.check_options({"host": "nas", "export": "/x", "mount_point": "/etc"})
    NFSStorage.check_options({"host": "nas", "export": "/etc"})  # a path on the server
    NFSStorage.check_options({"host": "nas", "export": "/x",
                              "mount_point": "/var/lib/libvirt/images/nas"})


# -- direct kernel boot -------------------------------------------------------------------
@pytest.fixture
def boot_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "boot-files"
    folder.mkdir()
    (folder / "vmlinuz").write_bytes(b"kernel")
    (folder / "shadow").symlink_to("/etc/shadow")
    monkeypatch.setenv("HVP_BOOT_DIRS", str(folder))
    return folder


def test_boot_paths_are_confined(boot_dir: Path):
    assert boot_path_problem(str(boot_dir / "vmlinuz")) is None
    assert boot_path_problem("/boot/vmlinuz-6.1") is None
    assert boot_path_problem("/var/lib/libvirt/images/k/vmlinuz") is None
    assert "not in a folder allowed" in boot_path_problem("/etc/shadow")
    assert "not in a folder allowed" in boot_path_problem("/srv/k", ["/var/lib/x"])
    assert boot_path_problem("/srv/k/vmlinuz", ["/srv/k"]) is None  # a storage's folder
    assert "'..'" in boot_path_problem("/boot/../etc/shadow")
    assert "'.'" in boot_path_problem("/boot/./x")
    assert "//" in boot_path_problem("/boot//x")
    assert "resolved: /etc/shadow" in boot_path_problem(str(boot_dir / "shadow"))
    assert boot_path_problem(str(boot_dir / "shadow"), resolve=False) is None  # remote node


def test_bad_boot_paths_are_refused_and_change_nothing(admin: Client, panel: Panel,
                                                       boot_dir: Path):
    template = small_template(admin)
    ok = {"name": "bootvm", "vm_template": template["id"]}
    cases = [
        ("/boot/../etc/shadow", "validation_error"),
        ("/boot/./x", "validation_error"),
        ("/boot//x", "validation_error"),
        ("/etc/shadow", "boot_path_refused"),
        (str(boot_dir / "shadow"), "boot_path_refused"),  # a symlink to /etc/shadow
    ]
    node = panel.nodes.all()[0]
    conn = panel.nodes.connection(node["id"]).get()
    before, domains = snapshot(admin), conn.listDefinedDomains()
    tasks = admin.get("/api/v1/tasks").body["items"]
    for kernel, code in cases:
        assert_error(admin.post("/api/v1/vms", {**ok, "boot": {"kernel": kernel}}), 422, code)
        assert_error(admin.post("/api/v1/vms", {**ok, "boot": {
            "kernel": str(boot_dir / "vmlinuz"), "initrd": kernel}}), 422, code)
    assert snapshot(admin) == before and conn.listDefinedDomains() == domains
    assert admin.get("/api/v1/tasks").body["items"] == tasks
    task = admin.run("POST", "/api/v1/vms", {**ok, "boot": {"kernel": str(boot_dir / "vmlinuz")}})
    vm = admin.get(f"/api/v1/vms/{task['result']['vm']}").body
    assert vm["name"] == "bootvm"
    admin.run("DELETE", f"/api/v1/vms/{vm['id']}")
