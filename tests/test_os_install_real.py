"""End to end through the API: a VM made from an OS template boots configured, then a recipe
installs software in it over SSH.

Real TCG guests on the real libvirtd, from the images of tests/support/images.py:
* the fast busybox + dropbear image (seconds to SSH): uploaded as an OS template; create
  with a recipe whose parameters are hostile shell text; failing, timed-out and cancelled
  runs; reinstall (disk replaced, addresses, host key and forward kept);
* Debian 12 with the real cloud-init 22.4 (about 2 minutes to SSH under TCG): imported from
  a folder repository; cloud-init sets the hostname, a static address from an IP pool on an
  isolated test bridge and the SSH key; the recipe builds a .deb with ``dpkg-deb`` and
  installs it with ``dpkg -i``; its output reaches the task log line by line;
* the fast image again as a ``config: script`` template: its own script configures the
  guest from the seed's plain files (no cloud-config), and the panel's pinned SSH works.
The panel reaches the guests through a user-mode NIC (``restrict=on``) with a 127.0.0.1
forward of port 22; the tests log in with their own key and pin the host key the panel
generated for the VM (paramiko RejectPolicy).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from tests.support import netns
from tests.support.client import Client
from tests.support.images import debian_image, ed25519_keypair, fast_image
from tests.support.realvirt import REPO_ROOT, ensure_libvirtd, served_panel

pytestmark = pytest.mark.slow
CACHE = REPO_ROOT / ".cache" / "images"
HOSTILE = "it's \"quoted\" $(touch /tmp/pwned) `id` ; rm -rf /nonexistent \\ end"

FAST_RECIPE = """#!/bin/sh
# metadata_begin
# recipe: hello_fast
# tags: busybox
# revision: 1
# description_en: Writes a greeting, line by line
# param: GREETING type=string required=yes description="What to write"
# param: COUNT type=int default=3
# metadata_end
i=1
while [ "$i" -le "$COUNT" ]; do echo "line $i of $COUNT"; i=$((i + 1)); sleep 0.2; done
printf '%s' "$GREETING" > /root/greeting
echo "greeting written"
"""
FAILING_RECIPE = """#!/bin/sh
# metadata_begin
# recipe: fails
# tags: busybox
# metadata_end
echo "about to fail"
echo "to stderr" >&2
exit 3
"""
SLEEPY_RECIPE = """#!/bin/sh
# metadata_begin
# recipe: sleepy
# tags: busybox
# timeout: 4
# metadata_end
echo "sleeping"
sleep 300 &
sleep 301
"""
CONFIGURE_SCRIPT = """#!/bin/sh
# The template's own configuration (config: script): the panel's seed files, no YAML.
set -eu
h=$(cat "$HVP_SEED/hvp-hostname")
hostname "$h" && echo "$h" > /etc/hostname
mkdir -p /root/.ssh && chmod 700 /root/.ssh
cp "$HVP_SEED/hvp-authorized-keys" /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
rm -f /etc/dropbear/dropbear_*_host_key
cp "$HVP_SEED/hvp-host-key" /etc/ssh/ssh_host_ed25519_key
chmod 600 /etc/ssh/ssh_host_ed25519_key
dropbearconvert openssh dropbear /etc/ssh/ssh_host_ed25519_key \\
    /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1
if [ -f "$HVP_SEED/hvp-password-hash" ]; then
    hash=$(cat "$HVP_SEED/hvp-password-hash")
    awk -F: -v OFS=: -v h="$hash" '$1 == "root" { $2 = h } { print }' /etc/shadow > /tmp/sh
    cat /tmp/sh > /etc/shadow && rm -f /tmp/sh
fi
cp "$HVP_SEED/hvp-network" /etc/hvp-network
echo "configured-by-script $h" > /etc/hvp-configured
echo "hvp-configure: done for $h"
"""
DEBIAN_RECIPE = """#!/bin/sh
# metadata_begin
# recipe: hello_deb
# tags: debian
# revision: 2
# description_en: Builds and installs a package
# param: MESSAGE type=string default=hi
# metadata_end
set -eu
echo "building the package"
work=$(mktemp -d)
mkdir -p "$work/pkg/DEBIAN" "$work/pkg/usr/bin"
cat > "$work/pkg/DEBIAN/control" <<EOF
Package: hvp-recipe
Version: 1.0
Architecture: all
Maintainer: tests <tests@example.invalid>
Description: installed by a recipe
EOF
printf '#!/bin/sh\\necho "%s"\\n' "recipe-made" > "$work/pkg/usr/bin/hvp-recipe"
chmod 0755 "$work/pkg/usr/bin/hvp-recipe"
dpkg-deb --build --root-owner-group "$work/pkg" "$work/hvp-recipe.deb"
dpkg -i "$work/hvp-recipe.deb"
printf '%s' "$MESSAGE" > /root/message
echo "installed: $(hvp-recipe)"
"""


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    uri = ensure_libvirtd()
    tag = uuid.uuid4().hex[:6]
    pool_dir = Path(f"/var/lib/libvirt/images/hvp-osi-{tag}")
    with served_panel(tmp_path_factory.mktemp("osi") / "data", uri) as (panel, admin):
        storage = admin.post("/api/v1/storages", {"name": f"osi-{tag}", "backend": "dir",
                                                  "options": {"path": str(pool_dir)}})
        assert storage.status == 201, storage
        net = admin.post("/api/v1/networks", {"name": f"usr-{tag}", "mode": "user"})
        assert net.status == 201, net
        private, public = ed25519_keypair("osi-test")
        env = {"panel": panel, "admin": admin, "tag": tag, "storage": storage.body,
               "user_net": net.body, "private": private, "public": public,
               "pool_dir": pool_dir}
        try:
            yield env
        finally:
            _clean(admin, storage.body, pool_dir)


def _clean(admin: Client, storage: dict, pool_dir: Path) -> None:
    for vm in admin.get("/api/v1/vms").body["items"]:
        for method, path in (("POST", f"/api/v1/vms/{vm['id']}/actions/destroy"),
                             ("DELETE", f"/api/v1/vms/{vm['id']}")):
            resp = admin.request(method, path)
            if resp.status == 202:
                admin.wait_task(resp.body["task"]["id"], timeout=180)
    deadline = time.monotonic() + 90
    while admin.get("/api/v1/vms").body["items"] and time.monotonic() < deadline:
        time.sleep(0.3)
    for template in admin.get("/api/v1/os-templates").body["items"]:
        admin.delete(f"/api/v1/os-templates/{template['id']}")
    for repo in admin.get("/api/v1/os-template-repos").body["items"]:
        admin.delete(f"/api/v1/os-template-repos/{repo['id']}")
    for recipe in admin.get("/api/v1/recipes").body["items"]:
        admin.delete(f"/api/v1/recipes/{recipe['id']}")
    for pool in admin.get("/api/v1/ip-pools").body["items"]:
        admin.delete(f"/api/v1/ip-pools/{pool['id']}")
    for net in admin.get("/api/v1/networks").body["items"]:
        admin.delete(f"/api/v1/networks/{net['id']}")
    base = f"/api/v1/storages/{storage['id']}/volumes"
    for vol in admin.get(base).body["items"]:
        admin.delete(f"{base}/{vol['name']}")
    assert admin.delete(f"/api/v1/storages/{storage['id']}").status == 204
    shutil.rmtree(pool_dir, ignore_errors=True)


def upload_template(admin: Client, storage: dict, path: Path, meta: dict) -> dict:
    data = path.read_bytes()
    body = {k: meta[k] for k in ("os_family", "os_version", "format", "tags", "min_disk_gib",
                                 "min_memory_mib", "default_user", "config", "script")
            if k in meta}
    made = admin.post("/api/v1/os-templates/uploads", {
        **body, "name": meta["name"], "storage": storage["id"],
        "sha256": hashlib.sha256(data).hexdigest()})
    assert made.status == 201, made
    task = admin.request("PUT", f"/api/v1/os-templates/{made.body['id']}/content", raw=data,
                         headers={"Content-Type": "application/octet-stream"})
    assert task.status == 202, task
    final = admin.wait_task(task.body["task"]["id"], timeout=300)
    assert final["state"] == "succeeded", final
    return final["result"]


def vm_template(admin: Client, name: str, memory_mib: int, disk_gib: int) -> dict:
    made = admin.post("/api/v1/vm-templates", {"name": name, "memory_mib": memory_mib,
                                               "vcpus": 2, "disk_gib": disk_gib})
    assert made.status == 201, made
    return made.body


def ssh_nic(real: dict) -> dict:
    return {"network": real["user_net"]["id"], "options": {"forwards": [{"guest_port": 22}]}}


def forward_port(vm: dict) -> int:
    for nic in vm["interfaces"]:
        for fwd in nic.get("options", {}).get("forwards", []):
            if fwd["guest_port"] == 22:
                return fwd["host_port"]
    raise AssertionError(f"no SSH forward on {vm['interfaces']}")


def host_key_of(real: dict, vm: dict) -> str:
    """The public host key the panel generated for ``vm`` (the one its seed installs)."""
    folder = Path(real["panel"].data_dir) / "guest-keys" / vm["id"]
    found = [p for p in folder.iterdir() if p.name.endswith(".pub") and "host" in p.name]
    assert found, sorted(p.name for p in folder.iterdir())
    return found[0].read_text().strip()


def login(real: dict, vm: dict, user: str = "root") -> paramiko.SSHClient:
    keytype, blob = host_key_of(real, vm).split()[:2]
    client = paramiko.SSHClient()
    port = forward_port(vm)
    client.get_host_keys().add(f"[127.0.0.1]:{port}", keytype,
                               paramiko.PKey.from_type_string(keytype, __import__("base64")
                                                              .b64decode(blob)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(real["private"]))
    for attempt in range(3):  # a handshake cut through the user-mode forward is retried
        try:
            client.connect("127.0.0.1", port=port, username=user, pkey=key, timeout=30,
                           allow_agent=False, look_for_keys=False)
            return client
        except paramiko.BadHostKeyException:
            raise  # a wrong host key is never retried
        except (EOFError, paramiko.SSHException, OSError):
            if attempt == 2:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


def sh(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _in, out, _err = client.exec_command(command, timeout=120)
    text = out.read().decode()
    return out.channel.recv_exit_status(), text


def runs_of(admin: Client, vm_id: str) -> list[dict]:
    return admin.get(f"/api/v1/vms/{vm_id}/recipe-runs").body["items"]


def run_recipe(admin: Client, vm_id: str, recipe: str, params: dict | None = None) -> dict:
    resp = admin.post(f"/api/v1/vms/{vm_id}/actions/run-recipe",
                      {"recipe": recipe, "params": params or {}})
    assert resp.status == 202, resp
    return resp.body["task"]


def create_vm(admin: Client, body: dict, timeout: float = 300) -> tuple[dict, dict]:
    task = admin.run("POST", "/api/v1/vms", body, timeout=timeout)
    return task, admin.get(f"/api/v1/vms/{task['result']['vm']}").body


@pytest.mark.timeout(900)
def test_fast_template_vm_runs_recipes_and_reinstalls(real: dict[str, Any]) -> None:
    admin, tag = real["admin"], real["tag"]
    image = fast_image(CACHE)
    template = upload_template(admin, real["storage"], image.qcow2, image.index)
    assert template["state"] == "ready" and template["tags"] == image.index["tags"]
    for script in (FAST_RECIPE, FAILING_RECIPE, SLEEPY_RECIPE):
        assert admin.post("/api/v1/recipes", {"script": script}).status == 201
    vmt = vm_template(admin, f"fast-{tag}", 192, 1)
    started = time.monotonic()
    task, vm = create_vm(admin, {
        "name": f"fast-{tag}", "vm_template": vmt["id"], "storage": real["storage"]["id"],
        "os_template": template["id"], "interfaces": [ssh_nic(real)],
        "ssh_keys": [real["public"]], "password": "a-root-password",
        "recipe": "hello_fast", "recipe_params": {"GREETING": HOSTILE, "COUNT": 4}})
    for step in ("clone", "seed"):
        assert any(step in line.lower() for line in task["log"]), task["log"]
    recipe_task = admin.wait_task(task["result"]["recipe_task"], timeout=300)
    to_recipe_done = time.monotonic() - started
    assert recipe_task["state"] == "succeeded", recipe_task
    lines = [line for line in recipe_task["log"] if "line " in line]
    assert [line.split("line ", 1)[1] for line in lines] == [f"{i} of 4" for i in range(1, 5)]
    assert any("greeting written" in line for line in recipe_task["log"])
    (run,) = runs_of(admin, vm["id"])
    assert run["state"] == "succeeded" and run["exit_code"] == 0 and run["name"] == "hello_fast"
    assert any("greeting written" in line for line in run["log"])

    with login(real, vm) as client:
        assert sh(client, "cat /root/greeting") == (0, HOSTILE)  # not interpreted by a shell
        assert sh(client, "test -e /tmp/pwned; echo $?") == (0, "1\n")
        assert sh(client, "hostname") == (0, f"fast-{tag}\n")
        disk_bytes = int(sh(client, "cat /sys/block/vda/size")[1]) * 512
    assert disk_bytes == 1024**3  # grown from the 128 MiB image to the template's 1 GiB

    failed = admin.wait_task(run_recipe(admin, vm["id"], "fails")["id"], timeout=120)
    assert failed["state"] == "failed" and "3" in failed["error"]["message"], failed
    assert any("about to fail" in line for line in failed["log"])
    assert runs_of(admin, vm["id"])[0]["exit_code"] == 3

    timed_out = admin.wait_task(run_recipe(admin, vm["id"], "sleepy")["id"], timeout=120)
    assert timed_out["state"] == "failed" and "timeout" in json.dumps(timed_out["error"]).lower()
    cancelled = run_recipe(admin, vm["id"], "sleepy")
    _wait_log(admin, cancelled["id"], "sleeping")
    assert admin.post(f"/api/v1/tasks/{cancelled['id']}/actions/cancel").status in (200, 202)
    assert admin.wait_task(cancelled["id"], timeout=60)["state"] == "cancelled"
    with login(real, vm) as client:
        assert sh(client, "pgrep -f 'sleep 30[01]' || echo none")[1] == "none\n"

    port, addresses = forward_port(vm), vm.get("addresses")
    again = admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/reinstall",
                      {"os_template": template["id"], "ssh_keys": [real["public"]]},
                      timeout=300)
    assert again["state"] == "succeeded"
    after = admin.get(f"/api/v1/vms/{vm['id']}").body
    assert forward_port(after) == port and after.get("addresses") == addresses
    _wait_ssh(real, after)
    with login(real, after) as client:  # the same pinned host key still verifies
        assert sh(client, "test -e /root/greeting; echo $?") == (0, "1\n")  # a fresh disk
    print(f"\nfast template VM: create + recipe done in {to_recipe_done:.1f} s")


@pytest.mark.timeout(600)
def test_script_template_vm_is_configured_by_the_template_s_own_script(
        real: dict[str, Any]) -> None:
    admin, tag = real["admin"], real["tag"]
    image = fast_image(CACHE)
    meta = {**image.index, "name": f"fast-script-{tag}", "config": "script"}
    template = upload_template(admin, real["storage"], image.qcow2,
                               {**meta, "script": CONFIGURE_SCRIPT})
    assert template["config"] == "script"
    if not any(r["name"] == "hello_fast" for r in admin.get("/api/v1/recipes").body["items"]):
        assert admin.post("/api/v1/recipes", {"script": FAST_RECIPE}).status == 201
    vmt = vm_template(admin, f"fast-script-{tag}", 192, 1)
    body = {"name": f"scripted-{tag}", "vm_template": vmt["id"],
            "storage": real["storage"]["id"], "os_template": template["id"],
            "interfaces": [ssh_nic(real)], "ssh_keys": [real["public"]],
            "password": "a-root-password"}
    before = admin.get("/api/v1/vms").body["items"]
    refused = admin.post("/api/v1/vms", {**body, "user_data": {"packages": ["htop"]}})
    assert refused.status == 422 and refused.body["error"]["code"] == "user_data_unsupported"
    assert admin.get("/api/v1/vms").body["items"] == before  # nothing made
    task, vm = create_vm(admin, {**body, "recipe": "hello_fast",
                                 "recipe_params": {"GREETING": "from a script template"}})
    assert any("configuration seed" in line for line in task["log"]), task["log"]
    recipe_task = admin.wait_task(task["result"]["recipe_task"], timeout=300)
    assert recipe_task["state"] == "succeeded", recipe_task  # the pinned host key verified
    mac = vm["interfaces"][0]["mac"]
    with login(real, vm) as client:
        assert sh(client, "cat /etc/hvp-configured") == (0, f"configured-by-script "
                                                            f"scripted-{tag}\n")
        assert sh(client, "hostname") == (0, f"scripted-{tag}\n")
        assert mac in sh(client, "cat /etc/hvp-network")[1]
        assert sh(client, "grep -c '^root:\\$6\\$' /etc/shadow") == (0, "1\n")
        assert sh(client, "cat /root/greeting") == (0, "from a script template")


def _wait_log(admin: Client, task_id: str, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = admin.get(f"/api/v1/tasks/{task_id}").body
        if any(text in line for line in task["log"]):
            return
        assert task["state"] in ("queued", "running"), task
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never reached the log of task {task_id}")


def _wait_ssh(real: dict, vm: dict, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            login(real, vm).close()
            return
        except (OSError, paramiko.SSHException):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


@pytest.mark.timeout(1800)
def test_debian_template_is_configured_by_cloud_init_and_installs_a_package(
        real: dict[str, Any], tmp_path: Path) -> None:
    admin, tag = real["admin"], real["tag"]
    image = debian_image(CACHE)
    repo_dir = CACHE / f"repo-{tag}"
    repo_dir.mkdir()
    try:
        os.link(image.qcow2, repo_dir / "debian12.qcow2")
        (repo_dir / "index.json").write_text(json.dumps(
            {"version": 1, "templates": [image.index_entry("debian12.qcow2")]}))
        repo = admin.post("/api/v1/os-template-repos", {
            "name": f"local-{tag}", "source": "folder", "options": {"path": str(repo_dir)}})
        assert repo.status == 201, repo
        imported = admin.run("POST", "/api/v1/os-templates", {
            "repo": repo.body["id"], "entry": image.index["name"],
            "storage": real["storage"]["id"]}, timeout=600)
    finally:
        shutil.rmtree(repo_dir, ignore_errors=True)
    template = imported["result"]
    assert template["default_user"] == "debian" and "debian" in template["tags"]
    assert admin.post("/api/v1/recipes", {"script": DEBIAN_RECIPE}).status == 201
    vmt = vm_template(admin, f"deb-{tag}", 512, 3)
    with netns.bridge(addresses=["198.51.100.1/24"]) as br:
        net = admin.post("/api/v1/networks", {"name": f"pub-{tag}", "mode": "bridge",
                                              "options": {"bridge": br}})
        assert net.status == 201, net
        pool = admin.post("/api/v1/ip-pools", {
            "name": f"pub-{tag}", "network": net.body["id"], "subnet": "198.51.100.0/24",
            "gateway": "198.51.100.1", "range": {"start": "198.51.100.50",
                                                 "end": "198.51.100.60"}})
        assert pool.status == 201, pool
        started = time.monotonic()
        task, vm = create_vm(admin, {
            "name": f"deb-{tag}", "vm_template": vmt["id"], "storage": real["storage"]["id"],
            "os_template": template["id"], "ssh_keys": [real["public"]],
            "hostname": f"web-{tag}",
            "interfaces": [ssh_nic(real), {"network": net.body["id"]}],
            "recipe": "hello_deb", "recipe_params": {"MESSAGE": HOSTILE}}, timeout=600)
        recipe_task = admin.wait_task(task["result"]["recipe_task"], timeout=900)
        elapsed = time.monotonic() - started
        assert recipe_task["state"] == "succeeded", recipe_task
        log = recipe_task["log"]
        assert any("building the package" in line for line in log), log
        assert any("installed: recipe-made" in line for line in log), log
        assert any("Unpacking hvp-recipe" in line for line in log), log
        address = vm["interfaces"][1]["ips"][0] if vm["interfaces"][1].get("ips") else \
            vm["addresses"][0]
        assert address == "198.51.100.50", vm
        with login(real, vm) as client:
            assert sh(client, "hostname") == (0, f"web-{tag}\n")
            assert sh(client, "cloud-init status --wait")[1].strip().endswith("done")
            assert "198.51.100.50/24" in sh(client, "ip -4 -o addr show dev eth1")[1]
            assert sh(client, "cat /root/message") == (0, HOSTILE)
            assert sh(client, "dpkg-query -W -f='${Status}' hvp-recipe")[1] == \
                "install ok installed"
        with netns.namespace(br, ["198.51.100.2/24"]) as peer:
            assert netns.ping(peer.name, "198.51.100.50", count=2)
        admin.run("POST", f"/api/v1/vms/{vm['id']}/actions/destroy")
        admin.run("DELETE", f"/api/v1/vms/{vm['id']}", timeout=180)
        assert admin.delete(f"/api/v1/ip-pools/{pool.body['id']}").status == 204
        assert admin.delete(f"/api/v1/networks/{net.body['id']}").status == 204
    print(f"\nDebian template VM: create + cloud-init + recipe done in {elapsed:.1f} s")
