"""Manual proof of the two-node set-up of tests/support/cluster.py, with timings.

Run (as root, libvirt + openssh-server + netcat-openbsd installed):
``.venv/bin/python tests/support/try_cluster.py``

(a) paramiko reaches the private sshd with a pinned host key (RejectPolicy + known_hosts);
(b) libvirt opens the SECOND libvirtd through that sshd (libssh2 transport, known_hosts
    pinned, ``proxy=netcat`` + ``socket=``); a changed host key makes the open fail;
(c) a real TCG guest is live-migrated qemu:///system -> daemon 2 -> back, disk-less and
    with a local qcow2 disk (copy storage), while its serial console keeps counting;
    failures when daemon 2 is down;
(d) the close callback of a connection with keepalive when daemon 2 is SIGKILLed and
    when it hangs (SIGSTOP); daemon 2 restarted, the guest it ran is still there.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would come first on sys.path: import via the repo root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parents[1]))

import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from xml.sax.saxutils import escape  # noqa: E402

import libvirt  # noqa: E402
import paramiko  # noqa: E402

from tests.support.cluster import (  # noqa: E402
    Daemon2,
    Sshd,
    kill_libvirtd2,
    make_client_key,
    short_tempdir,
    start_libvirtd2,
    start_sshd,
    stop_libvirtd2,
    stop_sshd,
    system_serial_log_path,
    write_known_hosts,
    write_ssh_command_wrapper,
)
from tests.support.guest import MARKER, UPTIME_PREFIX, build_guest_assets  # noqa: E402
from tests.support.realvirt import REPO_ROOT, ensure_libvirtd, wait_for_serial  # noqa: E402

LIVE = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
COPY_STORAGE = LIVE | libvirt.VIR_MIGRATE_NON_SHARED_DISK
MIGRATE_PARAMS = {
    libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1",
    libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "127.0.0.1",
}
RESULTS: list[str] = []


def report(line: str) -> None:
    print(line, flush=True)
    RESULTS.append(line)


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.monotonic()
    value = fn()
    return value, time.monotonic() - start


def failure(fn: Callable[[], object]) -> tuple[str, float]:
    """Run ``fn`` expecting a libvirtError; return its text (with codes) and the time."""
    start = time.monotonic()
    try:
        fn()
    except libvirt.libvirtError as exc:
        return (f"code={exc.get_error_code()} domain={exc.get_error_domain()}: {exc}",
                time.monotonic() - start)
    raise AssertionError("expected a libvirtError")


def uptimes(path: Path) -> list[int]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [int(n) for n in re.findall(rf"{UPTIME_PREFIX} (\d+)", text)]


def wait_uptime_above(path: Path, value: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = uptimes(path)
        if seen and seen[-1] > value:
            return seen[-1]
        time.sleep(0.1)
    raise TimeoutError(f"{path}: no {UPTIME_PREFIX} above {value}; saw {uptimes(path)[-5:]}")


def domain_xml(name: str, assets, disk: Path | None = None) -> str:
    """A 128 MiB TCG guest, direct kernel boot, serial console appended to a file."""
    disk_xml = ""
    if disk is not None:
        disk_xml = f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{escape(str(disk))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>"""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <features><acpi/></features>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(assets.kernel))}</kernel>
    <initrd>{escape(str(assets.initrd))}</initrd>
    <cmdline>console=ttyS0 quiet</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <devices>{disk_xml}
    <serial type='file'>
      <source path='{escape(str(system_serial_log_path(name)))}' append='on'/>
      <target port='0'/>
    </serial>
  </devices>
</domain>"""


def pool_xml(name: str, path: str) -> str:
    return (f"<pool type='dir'><name>{name}</name>"
            f"<target><path>{path}</path></target></pool>")


def vol_xml(name: str, capacity: int) -> str:
    return (f"<volume><name>{name}</name><capacity unit='B'>{capacity}</capacity>"
            "<target><format type='qcow2'/></target></volume>")


def read_qcow2_head(path: Path, size: int = 64) -> bytes:
    """First bytes of a qcow2 image's guest-visible content (-U: it may be in use)."""
    out = Path(f"/tmp/hvp-head-{os.getpid()}.raw")
    try:
        subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(path),
                        str(out)], check=True, capture_output=True, timeout=60)
        with open(out, "rb") as fh:
            return fh.read(size)
    finally:
        out.unlink(missing_ok=True)


def start_event_loop() -> None:
    libvirt.virEventRegisterDefaultImpl()

    def run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=run, name="libvirt-events", daemon=True).start()


# ------------------------------------------------------------------------------ (a)


def step_a(sshd: Sshd, key: Path, known_hosts: Path) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    _, took = timed(lambda: client.connect(
        sshd.host, port=sshd.port, username="root", key_filename=str(key),
        look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10))
    _, stdout, _ = client.exec_command("cat /etc/os-release", timeout=10)
    os_release = stdout.read().decode()
    client.close()
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]*)', os_release, re.M)
    report(f"(a) paramiko connect {took:.3f}s (host key pinned, RejectPolicy); "
           f"cat /etc/os-release -> {pretty.group(1) if pretty else os_release[:60]!r}")
    # Pinned key missing (empty known_hosts) and a wrong pinned key.
    for label, hosts in (("unknown host key", None), ("changed host key", "wrong")):
        client = paramiko.SSHClient()
        if hosts == "wrong":
            other = paramiko.Ed25519Key.from_private_key_file(str(key))
            client.get_host_keys().add(f"[{sshd.host}]:{sshd.port}", "ssh-ed25519", other)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        start = time.monotonic()
        try:
            client.connect(sshd.host, port=sshd.port, username="root", key_filename=str(key),
                           look_for_keys=False, allow_agent=False, timeout=10)
            raise AssertionError("paramiko accepted an unverified host key")
        except paramiko.SSHException as exc:
            report(f"(a) paramiko {label}: {type(exc).__name__} after "
                   f"{time.monotonic() - start:.3f}s: {exc}")
        finally:
            client.close()


def step_a_password(work: Path) -> None:
    """SSHD_PASSWORD_AUTH=1: password auth offered, but no account has a known password."""
    pw_dir = work / "sshd-pw"
    sshd = start_sshd(pw_dir, password_auth=True)
    client = paramiko.SSHClient()
    write_known_hosts(sshd, pw_dir / "known_hosts")
    client.load_host_keys(str(pw_dir / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    start = time.monotonic()
    try:
        client.connect(sshd.host, port=sshd.port, username="root", password="not-the-password",
                       look_for_keys=False, allow_agent=False, timeout=10)
        raise AssertionError("a password login succeeded")
    except paramiko.AuthenticationException as exc:
        report(f"(a) SSHD_PASSWORD_AUTH=1, root + a password: {type(exc).__name__} after "
               f"{time.monotonic() - start:.3f}s: {exc}")
    finally:
        client.close()
        stop_sshd(pw_dir)


# ------------------------------------------------------------------------------ (b)


def step_b(sshd_dir: Path, sshd: Sshd, d2: Daemon2, key: Path, known_hosts: Path) -> Sshd:
    uri = d2.ssh_uri(sshd, key, known_hosts)
    report(f"(b) URI: {uri}")
    conn, took = timed(lambda: libvirt.open(uri))
    hostname = conn.getHostname()
    caps, took_caps = timed(conn.getCapabilities)
    host_uuid = re.search(r"<uuid>([^<]+)</uuid>", caps).group(1)
    assert host_uuid == d2.host_uuid, (host_uuid, d2.host_uuid)
    report(f"(b) libssh2 open {took:.3f}s, getHostname={hostname!r}, getCapabilities "
           f"{took_caps:.3f}s, host uuid {host_uuid} == daemon 2's")
    conn.close()
    # OpenSSH transport: known_hosts= is ignored; with a wrapper pinning the file it works.
    wrapper = write_ssh_command_wrapper(sshd_dir / "ssh-pinned", known_hosts)
    conn, took = timed(lambda: libvirt.open(d2.ssh_uri(sshd, key, known_hosts,
                                                       transport="ssh", command=wrapper)))
    report(f"(b) qemu+ssh with command={wrapper.name} wrapper: open {took:.3f}s, "
           f"uuid ok={d2.host_uuid in conn.getCapabilities()}")
    conn.close()
    text, took = failure(lambda: libvirt.open(d2.ssh_uri(sshd, key, known_hosts,
                                                         transport="ssh")))
    report(f"(b) qemu+ssh WITHOUT wrapper (known_hosts= ignored, ~/.ssh/known_hosts used): "
           f"fails in {took:.3f}s: {text}")
    # proxy=native: virt-ssh-helper ignores socket= and reaches the SYSTEM daemon.
    native = uri.replace("proxy=netcat", "proxy=native")
    conn = libvirt.open(native)
    reached = re.search(r"<uuid>([^<]+)</uuid>", conn.getCapabilities()).group(1)
    conn.close()
    report(f"(b) same URI with proxy=native reaches host uuid {reached} "
           f"({'SYSTEM daemon, not daemon 2' if reached != d2.host_uuid else 'daemon 2'})")
    # A CHANGED host key: new sshd key, old known_hosts.
    stop_sshd(sshd_dir)
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
        (sshd_dir / name).unlink()
    new = start_sshd(sshd_dir)
    assert new.port == sshd.port and new.fingerprint != sshd.fingerprint
    text, took = failure(lambda: libvirt.open(uri))
    report(f"(b) CHANGED host key ({sshd.fingerprint} -> {new.fingerprint}): open fails in "
           f"{took:.3f}s: {text}")
    text, took = failure(lambda: libvirt.open(uri.replace(str(known_hosts),
                                                          str(sshd_dir / "empty_hosts"))))
    report(f"(b) host key not in known_hosts: open fails in {took:.3f}s: {text}")
    write_known_hosts(new, known_hosts)
    conn, took = timed(lambda: libvirt.open(uri))
    conn.close()
    report(f"(b) known_hosts rewritten for the new key: open {took:.3f}s")
    return new


# ------------------------------------------------------------------------------ (c)+(d)


class CloseWatch:
    """Records when and why libvirt closed a connection (close callback)."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.event = threading.Event()
        self.reason: int | None = None
        self.at = 0.0
        conn.registerCloseCallback(self._closed, None)

    def _closed(self, _conn, reason, _opaque) -> None:
        self.reason = reason
        self.at = time.monotonic()
        self.event.set()


REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "ERROR",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "EOF",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "KEEPALIVE",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "CLIENT",
}


def ns_qemu_pids(d2: Daemon2) -> list[int]:
    """QEMU processes running in daemon 2's mount namespace(s)."""
    want = os.stat(d2.dir / "ns" / "run")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(entry / "root" / "run" / "libvirt")
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino) and comm.startswith("qemu"):
            pids.append(int(entry.name))
    return pids


def step_c_d(sconn: libvirt.virConnect, uri: str, d2: Daemon2, assets, tag: str) -> None:
    name = f"hvpmig-{tag}"
    sys_log = system_serial_log_path(name)
    d2_log = d2.serial_log_path(name)
    sys_log.unlink(missing_ok=True)
    report(f"(c) serial log on daemon 2: /var/log/libvirt/qemu/{name}-serial.log in its "
           f"namespace = {d2_log} on the host")
    dconn = libvirt.open(uri)
    dom = sconn.defineXML(domain_xml(name, assets))
    _, took = timed(dom.create)
    _, took_boot = timed(lambda: wait_for_serial(sys_log, MARKER, 120))
    before = wait_uptime_above(sys_log, 0)
    report(f"(c) disk-less guest: create {took:.2f}s, {MARKER} {took_boot:.1f}s later, "
           f"guest uptime {before}")

    new, took = timed(lambda: dom.migrate3(dconn, MIGRATE_PARAMS, LIVE))
    after = wait_uptime_above(d2_log, before)
    d2_seen = uptimes(d2_log)
    assert MARKER not in d2_log.read_text(), "guest rebooted on daemon 2?"
    assert d2_seen[0] >= before, (before, d2_seen)
    try:
        sconn.lookupByName(name)
        src_left = "still defined on source!"
    except libvirt.libvirtError:
        src_left = "gone from source (UNDEFINE_SOURCE)"
    report(f"(c) live migrate3 system -> daemon 2 (LIVE|PERSIST_DEST|UNDEFINE_SOURCE, "
           f"URI tcp://127.0.0.1, LISTEN_ADDRESS 127.0.0.1): {took:.2f}s; uptime on source "
           f"{before} -> first on dest {d2_seen[0]} -> {after}, no reboot; "
           f"persistent on dest={new.isPersistent()}; {src_left}")

    # (d1) SIGKILL of daemon 2 while a keepalive connection with a close callback is open.
    kconn = libvirt.open(uri)
    kconn.setKeepAlive(5, 3)
    watch = CloseWatch(kconn)
    qemu_before = ns_qemu_pids(d2)
    killed_at = time.monotonic()
    kill_libvirtd2(d2.dir)
    fired = watch.event.wait(60)
    report("(d) SIGKILL libvirtd2 (keepalive 5s x3, close callback): callback "
           + (f"after {watch.at - killed_at:.3f}s, reason {REASONS.get(watch.reason)}"
              if fired else "did NOT fire within 60s"))
    alive = [p for p in qemu_before if Path(f"/proc/{p}").exists()]
    report(f"(d) guest QEMU of daemon 2 survives the daemon's death: {alive} of {qemu_before}")
    try:
        dconn.getHostname()
        report("(d) the other open connection still works?!")
    except libvirt.libvirtError as exc:
        report(f"(d) call on another open connection after the kill: {exc}")
    d2_new, took = timed(lambda: start_libvirtd2(d2.dir))
    dconn, took_open = timed(lambda: libvirt.open(uri))
    new = dconn.lookupByName(name)
    now = wait_uptime_above(d2_log, uptimes(d2_log)[-1])
    report(f"(d) restart daemon 2 {took:.2f}s (pid {d2_new.pid}), reconnect {took_open:.3f}s; "
           f"guest still active={bool(new.isActive())}, uptime {now}, same QEMU "
           f"{ns_qemu_pids(d2) == alive}")

    # (d2) a HUNG daemon (SIGSTOP): only keepalive can notice.
    kconn = libvirt.open(uri)
    kconn.setKeepAlive(5, 3)
    watch = CloseWatch(kconn)
    stopped_at = time.monotonic()
    os.kill(d2_new.pid, signal.SIGSTOP)
    try:
        fired = watch.event.wait(60)
    finally:
        os.kill(d2_new.pid, signal.SIGCONT)
    report("(d) SIGSTOP libvirtd2 (keepalive 5s x3): close callback "
           + (f"after {watch.at - stopped_at:.2f}s, reason {REASONS.get(watch.reason)}"
              if fired else "did NOT fire within 60s"))
    dconn.close()
    dconn = libvirt.open(uri)
    new = dconn.lookupByName(name)

    # Back to the system daemon.
    last = uptimes(d2_log)[-1]
    back, took = timed(lambda: new.migrate3(sconn, MIGRATE_PARAMS, LIVE))
    after = wait_uptime_above(sys_log, last)
    report(f"(c) live migrate3 daemon 2 -> system: {took:.2f}s; uptime {last} on daemon 2 -> "
           f"{after} on system (serial log appended: append='on'), "
           f"boots in system log={sys_log.read_text().count(MARKER)}")

    # Failures: daemon 2 down.
    stop_libvirtd2(d2.dir)
    text, took = failure(lambda: back.migrate3(dconn, MIGRATE_PARAMS, LIVE))
    report(f"(c) migrate3 over a connection whose daemon 2 was stopped: fails in {took:.3f}s: "
           f"{text}")
    text, took = failure(lambda: libvirt.open(uri))
    report(f"(c) open of daemon 2 while it is stopped: fails in {took:.3f}s: {text}")
    assert back.isActive(), "the guest must keep running on the source"
    start_libvirtd2(d2.dir)
    back.destroy()
    back.undefine()
    dconn.close()
    sys_log.unlink(missing_ok=True)


def step_c_storage(sconn: libvirt.virConnect, uri: str, d2: Daemon2, assets,
                   tag: str) -> None:
    name = f"hvpmigd-{tag}"
    pool_name = f"hvp-mig-{tag}"
    pool_path = f"/var/lib/libvirt/images/{pool_name}"
    vol_name = f"{name}.qcow2"
    disk = Path(pool_path) / vol_name
    capacity = 32 * 1024 * 1024
    sys_log = system_serial_log_path(name)
    d2_log = d2.serial_log_path(name)
    sys_log.unlink(missing_ok=True)
    dconn = libvirt.open(uri)
    spool = sconn.storagePoolCreateXML(pool_xml(pool_name, pool_path),
                                       libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
    dpool = dconn.storagePoolCreateXML(pool_xml(pool_name, pool_path),
                                       libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
    marker = f"HVPMIGDISK-{tag}"
    raw = Path(f"/tmp/{name}.raw")
    try:
        with open(raw, "wb") as fh:
            fh.write(marker.encode())
            fh.truncate(capacity)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                        str(disk)], check=True, capture_output=True, timeout=60)
    finally:
        raw.unlink(missing_ok=True)
    spool.refresh()
    dvol = dpool.createXML(vol_xml(vol_name, capacity))  # pre-created, same path and size
    report(f"(c) pool {pool_name} at {pool_path} on both daemons; on the host daemon 2's is "
           f"{d2.host_path(pool_path)}; destination volume pre-created: {dvol.path()}")
    dom = sconn.defineXML(domain_xml(name, assets, disk))
    dom.create()
    wait_for_serial(sys_log, MARKER, 120)
    wait_uptime_above(sys_log, 0)
    assert f"HVP-DISK {marker}" in sys_log.read_text(), sys_log.read_text()[-500:]
    before = uptimes(sys_log)[-1]

    text, took = failure(lambda: dom.migrate3(dconn, MIGRATE_PARAMS, LIVE))
    report(f"(c) local disk WITHOUT NON_SHARED_DISK: refused in {took:.3f}s: {text}")

    params = {**MIGRATE_PARAMS, libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"]}
    new, took = timed(lambda: dom.migrate3(dconn, params, COPY_STORAGE))
    after = wait_uptime_above(d2_log, before)
    head = read_qcow2_head(d2.host_path(disk))
    assert head.startswith(marker.encode()), head
    report(f"(c) copy-storage live migrate3 system -> daemon 2 (LIVE|PERSIST_DEST|"
           f"UNDEFINE_SOURCE|NON_SHARED_DISK, MIGRATE_DISKS=[vda]): {took:.2f}s; uptime "
           f"{before} -> {after}; destination image starts with {marker!r}")

    # Back, WITHOUT pre-creating: delete the stale source volume first.
    spool.storageVolLookupByName(vol_name).delete()
    spool.refresh()
    last = uptimes(d2_log)[-1]
    back, took = timed(lambda: new.migrate3(sconn, params, COPY_STORAGE))
    after = wait_uptime_above(sys_log, last)
    spool.refresh()
    head = read_qcow2_head(disk)
    report(f"(c) copy-storage migrate3 daemon 2 -> system, volume NOT pre-created "
           f"(libvirt created it in the pool): {took:.2f}s; uptime {last} -> {after}; "
           f"system image starts with marker={head.startswith(marker.encode())}, "
           f"volume listed={vol_name in spool.listVolumes()}")
    back.destroy()
    back.undefine()
    for pool in (spool, dpool):
        pool.refresh()
        for vol in pool.listAllVolumes():
            vol.delete()
        pool.destroy()
    shutil.rmtree(pool_path, ignore_errors=True)
    shutil.rmtree(d2.host_path(pool_path), ignore_errors=True)
    dconn.close()
    sys_log.unlink(missing_ok=True)


def cleanup_domains(conn: libvirt.virConnect | None, tag: str) -> None:
    if conn is None:
        return
    for dom in conn.listAllDomains():
        if tag in dom.name():
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
            except libvirt.libvirtError:
                pass
    if conn.getURI() == "qemu:///system":  # domain and serial logs of our guests
        for log in Path("/var/log/libvirt/qemu").glob(f"*{tag}*.log"):
            log.unlink(missing_ok=True)
    for pool in conn.listAllStoragePools():
        if tag in pool.name():
            try:
                for vol in pool.listAllVolumes():
                    vol.delete()
                pool.destroy()
            except libvirt.libvirtError:
                pass


def main() -> int:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    start_event_loop()
    ensure_libvirtd()
    assets = build_guest_assets(REPO_ROOT / ".cache" / "guest")
    tag = uuid.uuid4().hex[:6]
    work = short_tempdir("hvpc-")
    sshd_dir, d2_dir = work / "sshd", work / "n2"
    sconn = libvirt.open("qemu:///system")
    try:
        sshd, took = timed(lambda: start_sshd(sshd_dir))
        report(f"sshd started in {took:.2f}s on 127.0.0.1:{sshd.port} ({sshd.fingerprint})")
        d2, took = timed(lambda: start_libvirtd2(d2_dir))
        report(f"libvirtd2 started in {took:.2f}s: socket {d2.socket}, uuid {d2.host_uuid}")
        key, pub = make_client_key(work / "client_key")
        sshd.authorize_key(pub)
        known_hosts = write_known_hosts(sshd, work / "known_hosts")
        step_a(sshd, key, known_hosts)
        step_a_password(work)
        sshd = step_b(sshd_dir, sshd, d2, key, known_hosts)
        uri = d2.ssh_uri(sshd, key, known_hosts)
        step_c_d(sconn, uri, d2, assets, tag)
        step_c_storage(sconn, uri, d2, assets, tag)
    finally:
        cleanup_domains(sconn, tag)
        try:
            dconn = libvirt.open(f"qemu+unix:///system?socket={d2_dir}/run/libvirt-sock")
            cleanup_domains(dconn, tag)
            dconn.close()
        except libvirt.libvirtError:
            pass
        sconn.close()
        _, took = timed(lambda: stop_libvirtd2(d2_dir))
        report(f"libvirtd2 stopped in {took:.2f}s")
        stop_sshd(sshd_dir)
        shutil.rmtree(work, ignore_errors=True)
    print("\nSUMMARY\n" + "\n".join(RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
