"""The OS-template test images of tests/support/images.py boot for real from a NoCloud seed.

Real TCG guests on qemu:///system from hand-written domain XML (no panel): each image is
booted as a qcow2 overlay with a pycdlib-made seed ISO (label ``cidata``) as a CD-ROM and
QEMU user-mode networking isolated with ``restrict=on`` plus one 127.0.0.1 SSH forward.
paramiko logs in with the key put in the seed, the host key from the seed pinned
(RejectPolicy). Fast tier (no guest): the fast image's busybox-awk YAML reader against
PyYAML, the seed ISO read back, the index metadata against the panel's schema.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import random
import re
import secrets
import shutil
import socket
import string
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import jsonschema
import libvirt
import paramiko
import pytest
import yaml

from tests.support.guest import NET_ERROR_PREFIX, NET_READY_MARKER, POWEROFF_MARKER
from tests.support.images import (
    HOST_KEYS_BEGIN,
    HOST_KEYS_END,
    LOCAL_DEB_COMMAND,
    LOCAL_DEB_NAME,
    LOCAL_DEB_OUTPUT,
    SEED_APPLIED_PREFIX,
    SEED_ERROR_PREFIX,
    SEED_YAML_AWK,
    DebianImage,
    FastImage,
    TemplateImage,
    debian_image,
    ed25519_keypair,
    fast_image,
    nocloud_seed,
    read_seed,
    wait_for_ssh_banner,
)
from tests.support.realvirt import REPO_ROOT, ensure_libvirtd, wait_for_serial

CACHE = REPO_ROOT / ".cache" / "images"
SERIAL_LOG_DIR = Path("/var/log/libvirt/qemu")
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
BUSYBOX = "/bin/busybox"
TIMINGS = os.environ.get("HVP_IMAGE_TIMINGS")  # a file to append boot timings to (JSON lines)


# -- fast tier: the YAML reader, the seed, the metadata -----------------------------------
def awk_tree(text: str, tmp: Path) -> Any:
    """Run the fast image's YAML reader (host busybox awk) and read its tree back."""
    src, out = tmp / "in.yaml", tmp / "out"
    src.write_text(text, encoding="utf-8")
    prog = tmp / "seedyaml.awk"
    prog.write_text(SEED_YAML_AWK)
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([BUSYBOX, "awk", "-v", f"OUT={out}", "-f", str(prog), str(src)],
                   check=True, capture_output=True)
    return _tree(out) if out.exists() else None


def _tree(path: Path) -> Any:
    if path.is_file():
        return path.read_bytes().decode("utf-8", "replace")
    names = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
    if (path / ".seq").exists():
        return [_tree(path / n) for n in names]
    return {n: _tree(path / n) for n in names}


def as_text(value: Any) -> Any:
    """A loaded YAML value as the reader stores it: scalars as text, nulls dropped."""
    if isinstance(value, dict):
        return {str(k): as_text(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [as_text(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    alphabet = rng.choice([string.ascii_letters + string.digits + " \t\n'\"\\:#-&*!|>{}[],%@`?~=é€😀",
                           "ab :-#'\"\n"])
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        if rng.random() < 0.1:
            return rng.choice(["true", "null", "0644", "yes", "~", "-", "- ", ":", "#", "", " ",
                               "\n", "a\n", "1:20", "*a", "&a", 420, True])
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 5, 40, 200])))
    if roll < 0.75:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randint(0, 4))}


def cloud_config_sample() -> dict[str, Any]:
    """A user-data like the panel writes: shared key lists (anchors), PEM keys, argv lists."""
    private, public = ed25519_keypair("a-rather-long-comment-that-makes-the-key-line-wrap@example")
    keys = [public, public.replace("AAAA", "BBBB", 1)]
    return {
        "hostname": "vm-1", "users": ["default", {"name": "root", "ssh_authorized_keys": keys,
                                                  "lock_passwd": False}],
        "ssh_authorized_keys": keys, "ssh_pwauth": True,
        "ssh_keys": {"ed25519_private": private, "ed25519_public": public},
        "chpasswd": {"expire": False, "list": "root:secret\nalice:$6$abc$def\n"},
        "write_files": [{"path": "/etc/x.txt", "content": "a: b\n  'quoted' \"x\" #c\n\n\nend \n",
                         "permissions": "0640"},
                        {"path": "/etc/y", "content": "y" * 300, "permissions": 0o600},
                        {"path": "/etc/z", "content": "café € 😀\ttab\n"}],
        "runcmd": [["sh", "-c", "echo 'hi there' > /tmp/x"], "echo plain: string", ["true"]],
        "empty_list": [], "empty_map": {}, "nothing": None, "number": 5,
    }


def test_seed_yaml_reader_agrees_with_pyyaml(tmp_path: Path) -> None:
    """The fast image's busybox-awk YAML reader reads what PyYAML reads, in every layout."""
    docs = [cloud_config_sample()]
    rng = random.Random(1234)
    docs += [{"root": _random_value(rng), "s": _random_value(rng)} for _ in range(40)]
    for i, doc in enumerate(docs):
        for style in ({}, {"width": rng.randint(10, 100)}, {"default_flow_style": None},
                      {"default_flow_style": True}, {"allow_unicode": True}, {"indent": 4},
                      "json"):
            text = json.dumps(doc) if style == "json" else yaml.safe_dump(doc, **style)
            want = json.loads(text) if style == "json" else yaml.safe_load(text)
            assert awk_tree(text, tmp_path) == as_text(want), f"doc {i} {style}:\n{text}"
    handwritten = ("#cloud-config\n# comment\nruncmd:\n  - [ls, -l]   # argv\n  - |\n    echo a\n"
                   "    echo b\nwrite_files:\n  - path: /x\n    content: >\n      folded\n"
                   "      text\n\n      para\n    permissions: 0644\n")
    got = awk_tree(handwritten, tmp_path)
    assert got == as_text(yaml.safe_load(handwritten)) | {
        "write_files": [{"path": "/x", "content": "folded text\npara\n", "permissions": "0644"}]}
    assert (tmp_path / "out" / "write_files" / "000" / ".int.permissions").exists()


def test_nocloud_seed_reads_back(tmp_path: Path) -> None:
    seed = nocloud_seed(tmp_path / "seed.iso", {"instance-id": "i-1", "local-hostname": "h"},
                        {"runcmd": ["true"]}, {"version": 2, "ethernets": {}})
    files = read_seed(seed)
    assert files["volume_id"] == b"cidata"
    assert files["user-data"].startswith(b"#cloud-config\n")
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": "i-1", "local-hostname": "h"}
    assert yaml.safe_load(files["network-config"]) == {"version": 2, "ethernets": {}}


# -- booting ------------------------------------------------------------------------------
@dataclass
class Guest:
    """One booted transient domain: its name, SSH forward port, serial log, start time."""

    dom: libvirt.virDomain
    name: str
    port: int
    log: Path
    started: float


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open(ensure_libvirtd())
    yield c
    c.close()


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder QEMU (user libvirt-qemu) can read: overlays and seeds go here."""
    path = Path(tempfile.mkdtemp(prefix="hvp-img-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def random_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def domain_xml(name: str, disk: Path, seed: Path, log: Path, port: int, mac: str,
               memory_mib: int, vcpus: int) -> str:
    """TCG, no <cpu>, boot from the disk, seed as IDE CD-ROM, isolated user-mode NIC."""
    netdev = f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22"
    nic = f"virtio-net-pci,netdev=n0,mac={mac},bus=pci.0,addr=0x1e"
    return f"""<domain type='qemu' xmlns:qemu='{QEMU_NS}'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file={quoteattr(str(disk))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/><source file={quoteattr(str(seed))}/>
      <target dev='hdc' bus='ide'/><readonly/>
    </disk>
    <serial type='pty'><log file={quoteattr(str(log))} append='off'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/><qemu:arg value={quoteattr(netdev)}/>
    <qemu:arg value='-device'/><qemu:arg value={quoteattr(nic)}/>
  </qemu:commandline>
</domain>"""


def make_overlay(image: TemplateImage, work: Path) -> Path:
    overlay = work / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(image.qcow2), str(overlay)], check=True)
    return overlay


@contextmanager
def booted(conn: libvirt.virConnect, overlay: Path, seed: Path, mac: str,
           memory_mib: int, vcpus: int = 1) -> Iterator[Guest]:
    """Start a transient guest; afterwards destroy it and remove its logs."""
    name = f"hvp-img-{uuid.uuid4().hex[:8]}"
    log = SERIAL_LOG_DIR / f"{name}-serial.log"
    port = free_port()
    dom = None
    try:
        started = time.monotonic()
        dom = conn.createXML(domain_xml(name, overlay, seed, log, port, mac, memory_mib,
                                        vcpus), 0)
        yield Guest(dom, name, port, log, started)
    finally:
        if dom is not None:
            with suppress(libvirt.libvirtError):
                dom.destroy()
        (SERIAL_LOG_DIR / f"{name}.log").unlink(missing_ok=True)
        log.unlink(missing_ok=True)


def ssh(guest: Guest, user: str, host_public: str, private: str | None = None,
        password: str | None = None) -> paramiko.SSHClient:
    """paramiko logged in to the guest, its host key pinned (any other key is refused)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    kind, blob = host_public.split()[:2]
    client.get_host_keys().add(f"[127.0.0.1]:{guest.port}", kind,
                               paramiko.Ed25519Key(data=base64.b64decode(blob)))
    pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(private)) if private else None
    client.connect("127.0.0.1", port=guest.port, username=user, pkey=pkey, password=password,
                   allow_agent=False, look_for_keys=False, timeout=30, banner_timeout=60,
                   auth_timeout=60)
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 120) -> str:
    """Run ``command``; return its stdout, failing on a non-zero exit."""
    _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    status = stdout.channel.recv_exit_status()
    assert status == 0, f"{command!r} exited {status}: {out} {stderr.read().decode()}"
    return out


def install_local_deb(client: paramiko.SSHClient, image: TemplateImage, sudo: str,
                      connect: Callable[[], paramiko.SSHClient]) -> str:
    """Upload the image's .deb over SFTP, dpkg -i it, run what it installed.

    The upload has its own connection (``connect``): dropbear sometimes refuses or drops
    the next channel of a connection whose SFTP channel just closed."""
    with connect() as uploader, uploader.open_sftp() as sftp:
        sftp.put(str(image.local_deb), f"/tmp/{LOCAL_DEB_NAME}")
    run(client, f"{sudo}dpkg -i /tmp/{LOCAL_DEB_NAME}")
    return run(client, LOCAL_DEB_COMMAND).strip()


def record(kind: str, **timings: float) -> None:
    """Print boot timings (and append them to $HVP_IMAGE_TIMINGS when set)."""
    line = json.dumps({"image": kind, **{k: round(v, 1) for k, v in timings.items()}})
    print(line)
    if TIMINGS:
        with open(TIMINGS, "a") as fh:
            fh.write(line + "\n")


def check_index(image: TemplateImage) -> None:
    """The image's metadata is what the panel's OS-template schema accepts."""
    from hypervisor_panel.os_templates import ENTRY_SCHEMA, METADATA_SCHEMA

    jsonschema.validate(image.index, METADATA_SCHEMA)
    jsonschema.validate(image.index_entry(f"images/{image.qcow2.name}"), ENTRY_SCHEMA)
    assert image.index["size"] == image.qcow2.stat().st_size
    assert re.fullmatch(r"[0-9a-f]{64}", image.index["sha256"])
    assert image.raw_size >= image.index["min_disk_gib"] * 1024**3 or (
        image.index["min_disk_gib"] == 1)


# -- the fast image -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def fast() -> FastImage:
    return fast_image(CACHE)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fast_image_boots_applies_seed_and_keeps_state(conn: libvirt.virConnect,
                                                       fast: FastImage, work: Path) -> None:
    again = fast_image(CACHE)
    assert again.cached and again.qcow2 == fast.qcow2
    check_index(fast)
    assert fast.default_user == "root" and fast.kernel_version
    host_private, host_public = ed25519_keypair("host")
    private, public = ed25519_keypair("client")
    alice_private, alice_public = ed25519_keypair("alice")
    hostname = f"hvp-fast-{secrets.token_hex(3)}"
    mac = random_mac()
    keys = [public]  # the same list twice: yaml.safe_dump writes an anchor and an alias
    text = "line one\n  key: 'value' \"quoted\" # not a comment\n\ncafé €\n"
    blob = gzip.compress(b"\x00\x01binary\xff" * 10)
    user_data = {
        "users": ["default", {"name": "root", "ssh_authorized_keys": keys},
                  {"name": "alice", "ssh_authorized_keys": [alice_public], "shell": "/bin/sh"}],
        "ssh_authorized_keys": keys,
        "ssh_keys": {"ed25519_private": host_private, "ed25519_public": host_public},
        "ssh_pwauth": True,
        "chpasswd": {"expire": False,
                     "users": [{"name": "root", "password": "hvp-secret", "type": "text"}]},
        "write_files": [
            {"path": "/etc/hvp/seed.txt", "content": text, "permissions": "0640"},
            {"path": "/etc/hvp/int-mode", "content": "x\n", "permissions": 0o600},
            {"path": "/etc/hvp/blob", "content": base64.b64encode(blob).decode(),
             "encoding": "b64"},
            {"path": "/etc/hvp/log", "content": "a\n"},
            {"path": "/etc/hvp/log", "content": "b\n", "append": True},
        ],
        "bootcmd": [["sh", "-c", "echo boot >> /root/bootcmd.count"]],
        "runcmd": [["sh", "-c", 'echo "runcmd on $(hostname)" > /root/runcmd.out'],
                   "echo string form >> /root/runcmd.out"],
    }
    meta = {"instance-id": f"iid-{hostname}", "local-hostname": hostname}
    dhcp = {"version": 2, "ethernets": {"nic0": {"match": {"macaddress": mac},
                                                 "set-name": "eth0", "dhcp4": True}}}
    seed = nocloud_seed(work / "seed.iso", meta, user_data, dhcp)
    overlay = make_overlay(fast, work)
    with booted(conn, overlay, seed, mac, fast.index["min_memory_mib"]) as guest:
        banner = wait_for_ssh_banner(guest.port, timeout=180)
        to_banner = time.monotonic() - guest.started
        assert banner.startswith("SSH-2.0-dropbear")
        client = ssh(guest, "root", host_public, private=private)
        to_ssh = time.monotonic() - guest.started
        console = guest.log.read_text(errors="replace")
        assert f"{SEED_APPLIED_PREFIX} hostname={hostname}" in console
        assert "HVP-ADDR eth0 10.0.2.15/24" in console and NET_READY_MARKER in console
        assert SEED_ERROR_PREFIX not in console and NET_ERROR_PREFIX not in console, console
        keys_block = console.split(HOST_KEYS_BEGIN, 1)[1].split(HOST_KEYS_END, 1)[0]
        assert host_public.split()[1] in keys_block
        with client:
            assert run(client, "hostname").strip() == hostname
            assert run(client, "cat /etc/hvp/seed.txt") == text
            assert run(client, "stat -c %a /etc/hvp/seed.txt /etc/hvp/int-mode").split() == [
                "640", "600"]
            assert run(client, "base64 /etc/hvp/blob | tr -d '\\n'") == base64.b64encode(
                blob).decode()
            assert run(client, "cat /etc/hvp/log") == "a\nb\n"
            assert run(client, "cat /root/runcmd.out") == f"runcmd on {hostname}\nstring form\n"
            assert run(client, "cut -d: -f2 /etc/shadow | head -n 1").startswith("$6$")
            assert run(client, "cloud-init status --wait").strip() == "status: done"
            assert run(client, "test -f /var/lib/cloud/instance/boot-finished && echo y") == "y\n"
            assert install_local_deb(client, fast, "", lambda: ssh(
                    guest, "root", host_public, private=private)) == LOCAL_DEB_OUTPUT
        with ssh(guest, "root", host_public, password="hvp-secret") as by_password:
            assert run(by_password, "id -un").strip() == "root"
        with ssh(guest, "alice", host_public, private=alice_private) as alice:
            assert run(alice, "id -un; echo $HOME").split() == ["alice", "/home/alice"]
        guest.dom.shutdown()  # ACPI power button: a clean poweroff through busybox init
        wait_for_serial(guest.log, POWEROFF_MARKER, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                guest.dom.info()
            except libvirt.libvirtError:
                break  # a transient domain is gone once it powered off
            time.sleep(0.2)
        else:
            raise AssertionError("the guest did not power off on the ACPI power button")
    record("fast", banner_s=to_banner, ssh_login_s=to_ssh)

    # Second boot, same instance: per-instance steps are not repeated; the new network
    # config (static, per boot) applies; the state written on the disk is still there.
    static = {"version": 2, "ethernets": {"eth0": {
        "match": {"macaddress": mac}, "addresses": ["10.0.2.15/24"],
        "routes": [{"to": "default", "via": "10.0.2.2"}],
        "nameservers": {"addresses": ["10.0.2.3"], "search": ["example.test"]}}}}
    seed2 = nocloud_seed(work / "seed2.iso", meta, user_data, static)
    with booted(conn, overlay, seed2, mac, fast.index["min_memory_mib"]) as guest:
        wait_for_ssh_banner(guest.port, timeout=180)
        to_banner = time.monotonic() - guest.started
        console = guest.log.read_text(errors="replace")
        assert f"HVP-SEED-INSTANCE iid-{hostname} seen" in console
        assert "HVP-ADDR eth0 10.0.2.15/24" in console and NET_ERROR_PREFIX not in console
        with ssh(guest, "root", host_public, private=private) as client:
            assert run(client, "cat /root/runcmd.out") == f"runcmd on {hostname}\nstring form\n"
            assert run(client, "cat /root/bootcmd.count") == "boot\nboot\n"
            assert run(client, "ip -4 route show default").startswith("default via 10.0.2.2")
            assert run(client, "cat /etc/resolv.conf") == (
                "nameserver 10.0.2.3\nsearch example.test\n")
            assert run(client, LOCAL_DEB_COMMAND).strip() == LOCAL_DEB_OUTPUT
    record("fast-second-boot", banner_s=to_banner)


# -- Debian 12 with real cloud-init -------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_debian_image_boots_with_real_cloud_init(conn: libvirt.virConnect, work: Path) -> None:
    started = time.monotonic()
    image: DebianImage = debian_image(CACHE)
    build_s = time.monotonic() - started
    assert debian_image(CACHE).cached
    check_index(image)
    assert image.default_user == "debian" and image.kernel_version.startswith("6.1.")
    host_private, host_public = ed25519_keypair("host")
    private, public = ed25519_keypair("client")
    hostname = f"hvp-deb-{secrets.token_hex(3)}"
    mac = random_mac()
    text = "written by cloud-init: 'quotes' and \"more\"\n"
    user_data = {
        "users": ["default"],
        "ssh_authorized_keys": [public],
        "ssh_keys": {"ed25519_private": host_private, "ed25519_public": host_public},
        "ssh_genkeytypes": ["ed25519"],
        "ssh_deletekeys": True,
        "locale": "C.UTF-8",
        "manage_etc_hosts": True,
        "write_files": [{"path": "/etc/hvp-seed.txt", "content": text, "permissions": "0644"}],
        "runcmd": [["sh", "-c", "echo runcmd-ok > /var/tmp/hvp-runcmd"]],
    }
    meta = {"instance-id": f"iid-{hostname}", "local-hostname": hostname}
    network = {"version": 2, "ethernets": {"eth0": {"match": {"macaddress": mac},
                                                    "set-name": "eth0", "dhcp4": True}}}
    seed = nocloud_seed(work / "seed.iso", meta, user_data, network)
    overlay = make_overlay(image, work)
    with booted(conn, overlay, seed, mac, image.index["min_memory_mib"], vcpus=2) as guest:
        banner = wait_for_ssh_banner(guest.port, timeout=420)
        to_banner = time.monotonic() - guest.started
        assert banner.startswith("SSH-2.0-OpenSSH")
        with ssh(guest, image.default_user or "debian", host_public, private=private) as client:
            to_ssh = time.monotonic() - guest.started
            status = run(client, "cloud-init status --wait --long", timeout=420)
            to_cloud_init = time.monotonic() - guest.started
            assert "status: done" in status, status
            assert run(client, "test -f /var/lib/cloud/instance/boot-finished && echo y") == "y\n"
            assert run(client, "hostname").strip() == hostname
            assert run(client, "cat /etc/hvp-seed.txt") == text
            assert run(client, "cat /var/tmp/hvp-runcmd") == "runcmd-ok\n"
            pub = run(client, "sudo -n cat /etc/ssh/ssh_host_ed25519_key.pub").split()
            assert pub[:2] == host_public.split()[:2]
            assert "10.0.2.15/24" in run(client, "ip -4 -o addr show dev eth0")
            assert install_local_deb(client, image, "sudo -n ", lambda: ssh(
                guest, image.default_user or "debian", host_public,
                private=private)) == LOCAL_DEB_OUTPUT
    record("debian", build_s=build_s, banner_s=to_banner, ssh_login_s=to_ssh,
           cloud_init_done_s=to_cloud_init)
