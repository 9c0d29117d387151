"""Pure XML for VM backups: which disks a domain has, the backup, checkpoint and helper XML.

Every value put into XML is validated first (names, device targets, paths) and the XML is
built with ElementTree, so nothing read from a domain can change the documents' structure.
"""

from __future__ import annotations

import re
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .archive import BackupError

#: Checkpoints the panel makes (and may delete): ``hvp-<UTC time>-<random>``.
CHECKPOINT_PREFIX = "hvp-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DEV = re.compile(r"^[a-z]{2,4}[a-z0-9]{1,8}$")
_HOST = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")
_PATH = re.compile(r"^/[^\0\n]{1,4000}$")
# What a paused copy of a stopped domain does not need (and what could stop it starting:
# a network that is down, a host port already forwarded, a passed-through device).
HELPER_DROPS = ("interface", "graphics", "video", "sound", "hostdev", "redirdev",
                "smartcard", "channel", "input", "tpm", "audio", "filesystem")
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def check_name(name: str, what: str = "checkpoint") -> str:
    """``name`` if it is a safe libvirt object name, else BackupError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise BackupError(f"invalid {what} name {name!r}")
    return name


def new_checkpoint_name() -> str:
    """A fresh checkpoint name the panel owns."""
    return f"{CHECKPOINT_PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-" \
        f"{secrets.token_hex(3)}"


@dataclass(frozen=True)
class DomainDisk:
    """A disk to back up: its target dev, image format, source kind and path/name."""

    target: str
    driver_type: str  # qcow2, raw, ...
    source_type: str  # file, block, network, volume
    source: str  # file or block path, network image name, pool/volume
    bitmaps: bool = True  # a dirty bitmap can track it (qcow2 v3)
    note: str | None = None  # why it is always backed up in full

    def scratch_path(self, scratch_dir: str, token: str) -> str:
        """Where QEMU keeps this disk's copy-before-write data during a pull backup."""
        if self.source_type == "file" and _PATH.match(self.source):
            return f"{self.source}.hvp-scratch-{token}"
        return f"{scratch_dir.rstrip('/')}/hvp-scratch-{token}-{self.target}.qcow2"


def _source_of(disk: ET.Element, source_type: str) -> str | None:
    source = disk.find("source")
    if source is None:
        return None
    if source_type == "file":
        return source.get("file")
    if source_type == "block":
        return source.get("dev")
    if source_type == "network":
        return f"{source.get('protocol', '')}:{source.get('name', '')}"
    if source_type == "volume":
        return f"{source.get('pool', '')}/{source.get('volume', '')}"
    return None


def domain_disks(domain_xml: str) -> list[DomainDisk]:
    """The writable disks of a domain, in XML order (CD-ROMs, read-only and empty skipped)."""
    root = ET.fromstring(domain_xml)  # noqa: S314 - libvirt's XML
    out = []
    for disk in root.findall("devices/disk"):
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None \
                or disk.find("transient") is not None:
            continue
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        source_type = disk.get("type", "file")
        source = _source_of(disk, source_type)
        if not source or not _DEV.match(dev):
            continue
        driver = disk.find("driver")
        fmt = (driver.get("type") if driver is not None else None) or "raw"
        note = None if fmt == "qcow2" else \
            f"{fmt} images cannot hold dirty bitmaps: always backed up in full"
        out.append(DomainDisk(dev, fmt, source_type, source, fmt == "qcow2", note))
    return out


def without_bitmaps(disk: DomainDisk, note: str) -> DomainDisk:
    """``disk``, marked as one that is always backed up in full (``note`` says why)."""
    return DomainDisk(disk.target, disk.driver_type, disk.source_type, disk.source,
                      False, note)


def checkpoint_xml(name: str, disks: list[DomainDisk]) -> str | None:
    """A checkpoint with a bitmap on every disk that can hold one (None: no such disk)."""
    if not any(d.bitmaps for d in disks):
        return None
    root = ET.Element("domaincheckpoint")
    ET.SubElement(root, "name").text = check_name(name)
    ET.SubElement(root, "description").text = "hypervisor panel backup"
    listed = ET.SubElement(root, "disks")
    for disk in disks:
        ET.SubElement(listed, "disk", name=disk.target,
                      checkpoint="bitmap" if disk.bitmaps else "no")
    return ET.tostring(root, encoding="unicode")


def backup_xml(disks: list[DomainDisk], host: str, port: int, incremental: str | None,
               scratch: dict[str, str], socket: str | None = None) -> str:
    """A pull-mode backup over NBD/TCP, or over the unix ``socket`` QEMU then listens on;
    with ``incremental`` the bitmap disks send changes."""
    if socket is not None:
        if not _PATH.match(socket) or len(socket) > 100:  # sun_path holds 108 bytes
            raise BackupError(f"invalid NBD socket path {socket!r}")
    elif not _HOST.match(host) or not 0 < port < 65536:
        raise BackupError(f"invalid NBD server address {host}:{port}")
    root = ET.Element("domainbackup", mode="pull")
    if incremental:
        ET.SubElement(root, "incremental").text = check_name(incremental)
    if socket is not None:
        ET.SubElement(root, "server", transport="unix", socket=socket)
    else:
        ET.SubElement(root, "server", transport="tcp", name=host, port=str(port))
    listed = ET.SubElement(root, "disks")
    for disk in disks:
        attrs = {"name": disk.target, "backup": "yes", "type": "file",
                 "exportname": disk.target, "exportbitmap": f"backup-{disk.target}"}
        if incremental and disk.bitmaps:
            attrs["backupmode"] = "incremental"
            attrs["incremental"] = incremental
        else:
            attrs["backupmode"] = "full"
            del attrs["exportbitmap"]
        element = ET.SubElement(listed, "disk", attrs)
        path = scratch[disk.target]
        if not _PATH.match(path):
            raise BackupError(f"invalid scratch path {path!r}")
        ET.SubElement(element, "scratch", file=path)
    return ET.tostring(root, encoding="unicode")


def checkpoint_disks(checkpoint_xml_text: str) -> set[str]:
    """The disks a checkpoint tracks with a bitmap."""
    root = ET.fromstring(checkpoint_xml_text)  # noqa: S314 - libvirt's XML
    return {d.get("name", "") for d in root.findall("disks/disk")
            if d.get("checkpoint") == "bitmap"}


def helper_xml(inactive_xml: str) -> str:
    """A copy of a stopped domain (same name and UUID) that only exposes its disks.

    Started paused and transient over the persistent definition, it gives libvirt the QEMU
    process a backup job needs; its persistent definition and checkpoints stay as they are.
    """
    root = ET.fromstring(inactive_xml)  # noqa: S314 - libvirt's XML
    devices = root.find("devices")
    if devices is not None:
        for tag in HELPER_DROPS:
            for element in devices.findall(tag):
                devices.remove(element)
    for element in root.findall(f"{{{QEMU_NS}}}commandline"):
        root.remove(element)
    return ET.tostring(root, encoding="unicode")


def compat_of(volume_xml: str) -> str | None:
    """The qcow2 compat level a storage volume XML reports (None: not a qcow2 volume).

    libvirt writes ``<compat>`` only for v3 images (``1.1``); a qcow2 volume without it
    is a v2 (``0.10``) image.
    """
    root = ET.fromstring(volume_xml)  # noqa: S314 - libvirt's XML
    fmt = root.find("target/format")
    if fmt is None or fmt.get("type") != "qcow2":
        return None
    return (root.findtext("target/compat") or "").strip() or "0.10"
