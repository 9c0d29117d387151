"""What the test session left behind on the machine: compared before and after the run.

The system libvirtd is shared by everything on the machine, so tests must remove every
domain, pool, network, secret and nwfilter binding they make there, the directories under
/var/lib/libvirt/images, the panel's serial logs, their helper daemons and /tmp folders.
``conftest.py`` takes a :func:`snapshot` when the session starts and fails the session
when :func:`left_behind` finds something new at its end.
"""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path

SYSTEM_URI = "qemu:///system"
IMAGES = Path("/var/lib/libvirt/images")
SERIAL_LOGS = "/var/log/libvirt/qemu/*-serial.log"
TMP_PREFIXES = ("/tmp/hvp",)
# Helper processes the tests start (second daemons, sshd, Ceph, ganesha, QEMU, dnsmasq).
PROCESS_NAMES = ("libvirtd", "virtlogd", "sshd", "ceph-mon", "ceph-osd", "ceph-mgr",
                 "ganesha.nfsd", "qemu-system-x86", "dnsmasq", "pyftpdlib", "Xvfb")

Snapshot = dict[str, set[str]]


def _libvirt_objects() -> Snapshot:
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError:
        return {}
    try:
        out = {
            "domains": {d.name() for d in conn.listAllDomains(0)},
            "pools": {p.name() for p in conn.listAllStoragePools(0)},
            "networks": {n.name() for n in conn.listAllNetworks(0)},
            "secrets": {s.UUIDString() for s in conn.listAllSecrets(0)},
        }
        with contextlib.suppress(libvirt.libvirtError):
            out["nwfilter bindings"] = {b.portDev() for b in conn.listAllNWFilterBindings(0)}
        return out
    finally:
        conn.close()


def _processes() -> set[str]:
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited; waiting for PID 1 to reap it
            comm = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            continue
        wanted = any(comm.startswith(name[:15]) for name in PROCESS_NAMES)
        if (wanted or "pyftpdlib" in cmdline) and proc.name != str(os.getpid()):
            found.add(f"{proc.name} {cmdline[:160]}")
    return found


def snapshot() -> Snapshot:
    """The machine-wide things tests could leave behind, by kind."""
    snap = _libvirt_objects()
    snap["image directories"] = {p.name for p in IMAGES.iterdir()} if IMAGES.is_dir() else set()
    snap["serial logs"] = set(glob.glob(SERIAL_LOGS))
    snap["tmp folders"] = {p for prefix in TMP_PREFIXES for p in glob.glob(prefix + "*")}
    snap["processes"] = _processes()
    return snap


def left_behind(before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    """What ``after`` has that ``before`` had not (libvirt objects only when both have them).

    A process is identified by PID and command line, so a daemon the session started
    (libvirtd.sh's system daemon is started before the session by ``make test``) counts.
    """
    out = {}
    for kind, items in after.items():
        if kind not in before:
            continue
        new = sorted(items - before[kind])
        if new:
            out[kind] = new
    return out
