"""The ``lvm`` and ``network_lvm`` back ends: libvirt ``logical`` pools, one LV per disk.

A storage is a volume group (VG); every disk is a logical volume (LV) in it, handed to the
guest as a raw block device (``<disk type='block'>``). LVs take their whole size up front
(not thin-provisioned), so the core's capacity checks apply.

Clones are classic LVM snapshots: libvirt's logical back end runs ``lvcreate -s ORIGIN``
when the new volume's XML has ``<backingStore><path>/dev/VG/ORIGIN</path></backingStore>``.
A classic snapshot has a FIXED copy-on-write area, reserved when it is created; once full,
the snapshot becomes invalid and the guest's disk is lost. The panel therefore reserves the
whole clone capacity plus LVM's exception-store overhead (see ``cow_size``), so a snapshot
can never fill up, and a clone costs as much free space as a full copy (it is only faster
to make). Every write to the origin is copied to each of its snapshots, and removing an
origin removes its snapshots, so deleting a volume that still has snapshots is refused.

Every check goes through libvirt (``findStoragePoolSources``), never a local ``vgs``, so it
works the same on a remote node (``qemu+ssh://``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any, ClassVar

import libvirt

from hypervisor_panel.errors import Conflict, Invalid, PanelError
from hypervisor_panel.storage import (
    GIB,
    Disk,
    StorageBackend,
    StorageError,
    call_libvirt,
    libvirt_message,
)

MIB = 1024**2
#: LVM's naming rules for VGs and LVs: these characters, no leading hyphen, not "." or "..".
VG_NAME_PATTERN = r"^(?!-)(?!\.{1,2}$)[A-Za-z0-9+_.-]{1,127}$"
#: An absolute path under /dev (no "..") — a disk, partition, multipath map or by-id link.
DEVICE_PATTERN = r"^(?!.*/\.\.(?:/|$))/dev/[A-Za-z0-9._/+:@-]{1,250}$"
#: LV names LVM reserves for its own sub-volumes (lvcreate refuses them).
RESERVED_LV_PREFIXES = ("snapshot", "pvmove")
RESERVED_LV_PARTS = ("_cdata", "_cmeta", "_corig", "_iorig", "_mimage", "_mlog", "_pmspare",
                     "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig")

VG_NAME = {
    "type": "string",
    "title": "Volume group",
    "pattern": VG_NAME_PATTERN,
    "minLength": 1,
    "maxLength": 127,
}


def cow_size(capacity: int) -> int:
    """The copy-on-write area that lets a snapshot of ``capacity`` bytes never fill up.

    LVM's exception store needs 16 bytes per chunk (1/256 with the default 4 KiB chunks)
    plus a header; 1/128 + 4 MiB covers it with room to spare, and ``lvcreate`` trims a
    COW area larger than the usable maximum ("Reducing COW size ...").
    """
    return capacity + capacity // 128 + 4 * MIB


def check_lv_name(name: str) -> None:
    """Refuse, clearly and before libvirt runs ``lvcreate``, a name LVM would refuse."""
    if (name.startswith("-") or name in (".", "..") or name.startswith(RESERVED_LV_PREFIXES)
            or any(part in name for part in RESERVED_LV_PARTS)
            or not re.fullmatch(r"[A-Za-z0-9+_.-]{1,127}", name)):
        raise Invalid(f"{name!r} is not a valid LVM logical volume name (letters, digits, "
                      "'+_.-'; not starting with '-', 'snapshot' or 'pvmove'; none of "
                      "LVM's reserved suffixes such as '_tdata')", code="invalid_volume_name")


def lvm_reason(message: str) -> str:
    """One line out of libvirt's multi-line lvcreate/lvremove failure, with the cause first.

    libvirt reports "internal error: Child process (/sbin/lvcreate ...) unexpected exit
    status 3: <lvm's stderr>"; the stderr lines are what says why.
    """
    _head, sep, tail = message.partition("unexpected exit status")
    detail = tail.split(":", 1)[1] if sep and ":" in tail else message
    lines = [line.strip().rstrip(".") for line in detail.splitlines()
             if line.strip() and "--help" not in line and "modprobe" not in line]
    reason = "; ".join(lines)
    if "device-mapper" in message:
        reason = ("the node's kernel has no device-mapper support, which every logical "
                  f"volume needs (load the dm_mod module) — lvm says: {reason}")
    return reason


def volume_groups(conn: libvirt.virConnect) -> dict[str, list[str]]:
    """The node's VGs and their physical volumes, as libvirt sees them (local or remote)."""
    try:
        xml = conn.findStoragePoolSources("logical", None, 0)
    except libvirt.libvirtError as exc:
        raise StorageError(f"cannot list the volume groups on node {node_label(conn)}: "
                           f"{libvirt_message(exc)}",
                           code="lvm_unavailable") from exc
    groups: dict[str, list[str]] = {}
    for source in ET.fromstring(xml).iter("source"):  # noqa: S314 - libvirt's XML
        name = (source.findtext("name") or "").strip()
        if name:
            groups.setdefault(name, []).extend(
                dev.get("path", "") for dev in source.iter("device"))
    return groups


def node_label(conn: libvirt.virConnect) -> str:
    """The node's host name for messages (its URI when libvirt cannot say)."""
    try:
        return repr(conn.getHostname())
    except libvirt.libvirtError:
        return repr(conn.getURI())


class LVMStorage(StorageBackend):
    """A volume group on each node (local storage: migrations copy the disks).

    With ``devices`` the panel has libvirt build the VG (``pvcreate`` + ``vgcreate``) with
    ``VIR_STORAGE_POOL_BUILD_NO_OVERWRITE``: a device holding any signature (a file system,
    a partition table, another PV) is refused, never wiped. Without ``devices`` the VG must
    already exist on every node; that is checked through libvirt before the pool is defined.
    """

    name: ClassVar[str] = "lvm"
    description: ClassVar[str] = ("LVM volume group on each node (raw logical volumes, "
                                  "snapshot clones); built from empty devices if given")
    shared: ClassVar[bool] = False
    copy_on_write: ClassVar[bool] = True
    volume_format: ClassVar[str] = "raw"
    #: A logical volume is a raw block device; libvirt's logical pool writes no image format.
    volume_formats: ClassVar[tuple[str, ...]] = ("raw",)
    #: The flags used when the panel builds the VG (only with ``devices``; see ``prepare``).
    build_flags: ClassVar[int | None] = libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE
    options_schema: ClassVar[dict] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["vg_name"],
        "properties": {
            "vg_name": {**VG_NAME, "description": "Name of the LVM volume group on every node"},
            "devices": {
                "type": "array",
                "title": "Physical volumes",
                "description": "Empty block devices to create the volume group on "
                               "(pvcreate + vgcreate; a device holding data is refused, "
                               "never overwritten). Leave out to use an existing group.",
                "items": {"type": "string", "pattern": DEVICE_PATTERN},
                "minItems": 1,
                "maxItems": 64,
                "uniqueItems": True,
            },
        },
    }

    def __init__(self, storage: dict[str, Any]) -> None:
        super().__init__(storage)
        # Build only a VG the panel is asked to create; ``prepare`` also skips the build
        # when a node already has it (a storage added to a node the second time).
        self.build_flags = type(self).build_flags if self.options.get("devices") else None

    @property
    def vg_name(self) -> str:
        return self.options["vg_name"]

    # -- pure parts ------------------------------------------------------------------
    def pool_xml(self) -> str:
        pool = ET.Element("pool", type="logical")
        ET.SubElement(pool, "name").text = self.pool_name
        source = ET.SubElement(pool, "source")
        for device in self.options.get("devices") or []:
            ET.SubElement(source, "device", path=device)
        ET.SubElement(source, "name").text = self.vg_name
        ET.SubElement(source, "format", type="lvm2")
        target = ET.SubElement(pool, "target")
        ET.SubElement(target, "path").text = f"/dev/{self.vg_name}"
        return ET.tostring(pool, encoding="unicode")

    def _lv_element(self, name: str, size: int) -> ET.Element:
        """A fully allocated LV: libvirt makes a sparse snapshot LV when allocation < capacity."""
        vol = ET.Element("volume")
        ET.SubElement(vol, "name").text = name
        ET.SubElement(vol, "capacity", unit="bytes").text = str(size)
        ET.SubElement(vol, "allocation", unit="bytes").text = str(size)
        ET.SubElement(vol, "target")  # libvirt's schema wants one; an LV has no <format>
        return vol

    def volume_xml(self, name: str, capacity: int, fmt: str | None = None) -> str:
        """A raw LV (no ``<format>``: libvirt's logical pool has none for volumes)."""
        return ET.tostring(self._lv_element(name, capacity), encoding="unicode")

    def clone_xml(self, name: str, capacity: int, source: libvirt.virStorageVol) -> str:
        """A snapshot LV of ``source`` whose COW area holds all of ``capacity`` (``cow_size``).

        libvirt runs ``lvcreate --name NAME -L COW -s /dev/VG/SOURCE``; the snapshot's size
        is its origin's.
        """
        vol = self._lv_element(name, cow_size(capacity))
        backing = ET.SubElement(vol, "backingStore")
        ET.SubElement(backing, "path").text = source.path()
        return ET.tostring(vol, encoding="unicode")

    def volume_name(self, vm: dict[str, Any], index: int = 0) -> str:
        return f"{vm['domain_name']}-disk{index}"

    def disk(self, volume: libvirt.virStorageVol, target: str = "vda") -> Disk:
        return Disk(source_type="block", source={"dev": volume.path()}, driver_type="raw",
                    target=target)

    def thin_provisioned(self) -> bool:
        return False

    # -- side effects ----------------------------------------------------------------
    def prepare(self, conn: libvirt.virConnect) -> None:
        """Check the VG through libvirt; decide whether this node's pool must be built."""
        groups = volume_groups(conn)
        devices = self.options.get("devices") or []
        existing = groups.get(self.vg_name)
        if not devices:
            if existing is None:
                raise self._missing_vg(conn, groups)
            self.build_flags = None
            return
        if existing is not None:
            if sorted(existing) != sorted(devices):
                raise Conflict(
                    f"volume group {self.vg_name!r} already exists on node {node_label(conn)} "
                    f"on {', '.join(existing) or 'unknown devices'}, not on "
                    f"{', '.join(devices)}; leave 'devices' out to use it as it is",
                    code="vg_exists")
            self.build_flags = None  # made before (this storage on another node, or earlier)
            return
        taken = {dev: vg for vg, devs in groups.items() for dev in devs if dev in devices}
        if taken:
            raise Conflict("; ".join(f"{dev} already belongs to volume group {vg!r}"
                                     for dev, vg in sorted(taken.items()))
                           + f" on node {node_label(conn)}", code="device_in_use")
        self.build_flags = type(self).build_flags

    #: What to do about a missing volume group (the shared variant says something else).
    missing_vg_hint: ClassVar[str] = ("create it first (pvcreate + vgcreate) or give "
                                      "'devices' to have the panel create it")

    def _missing_vg(self, conn: libvirt.virConnect, groups: dict[str, list[str]]) -> PanelError:
        known = ", ".join(sorted(groups)) or "none"
        return StorageError(
            f"volume group {self.vg_name!r} does not exist on node {node_label(conn)} "
            f"(volume groups there: {known}); {self.missing_vg_hint}", code="vg_not_found")

    def ensure_pool(
        self, conn: libvirt.virConnect, *, adopt: bool = True
    ) -> libvirt.virStoragePool:
        """The core's ensure_pool (it has rolled back on failure); a failed build says why."""
        try:
            return super().ensure_pool(conn, adopt=adopt)
        except StorageError as exc:
            if self.build_flags is None or not exc.message.startswith("cannot build pool"):
                raise
            reason = exc.message.split(": ", 1)[-1].removeprefix("Storage pool already built: ")
            devices = ", ".join(self.options.get("devices") or [])
            message = (f"cannot create volume group {self.vg_name!r} on {devices} on node "
                       f"{node_label(conn)}: {reason}")
            if "overwrite" in reason or "already formatted" in reason:
                raise StorageError(
                    f"{message}. The panel never overwrites a device that holds data (a file "
                    "system, partition table or volume group): if that data is not needed, "
                    "wipe the device first (wipefs -a)", code="device_not_empty") from exc
            raise StorageError(message, code="vg_build_failed") from exc

    def create_volume(
        self, conn: libvirt.virConnect, name: str, capacity: int, fmt: str | None = None
    ) -> libvirt.virStorageVol:
        if fmt not in (None, *self.volume_formats):
            raise Invalid(f"storage {self.storage['name']!r} makes raw logical volumes, "
                          f"not {fmt}", code="unsupported_format")
        check_lv_name(name)
        pool = self.pool(conn)
        self._check_new(pool, name, capacity)
        return self._lvm_call(pool.createXML, self.volume_xml(name, capacity), 0,
                              what=f"create logical volume {name}")

    def _clone(self, pool: libvirt.virStoragePool, source: libvirt.virStorageVol, name: str,
               size: int) -> libvirt.virStorageVol:
        """A snapshot LV; a full copy when the clone must grow or ``source`` is a snapshot.

        A snapshot keeps its origin's size for good, so growing one is impossible, and
        classic LVM has no snapshots of snapshots. The COW area takes real space, which the
        core's check skips for copy-on-write back ends: it is checked here.
        """
        check_lv_name(name)
        source_is_snapshot = ET.fromstring(  # noqa: S314 - libvirt's XML
            source.XMLDesc(0)).find("backingStore/path") is not None
        snapshot = size <= source.info()[1] and not source_is_snapshot
        needed = cow_size(size) if snapshot else size
        available = pool.info()[3]
        if needed > available:
            what = "a snapshot's copy-on-write area" if snapshot else "a full copy"
            raise Invalid(f"{what} of {needed / GIB:.1f} GiB does not fit in storage "
                          f"{self.storage['name']!r} ({available / GIB:.1f} GiB free)",
                          code="no_space")
        if snapshot:
            return self._lvm_call(pool.createXML, self.clone_xml(name, size, source), 0,
                                  what=f"create snapshot {name} of {source.name()}")
        return self._lvm_call(pool.createXMLFrom, self.volume_xml(name, size), source, 0,
                              what=f"copy {source.name()} into a new logical volume {name}")

    def _delete(self, vol: libvirt.virStorageVol, name: str) -> None:
        """Refuse to delete an origin: ``lvremove -f`` would take its snapshots with it."""
        path = vol.path()
        pool = vol.storagePoolLookupByVolume()
        children = []
        for other in pool.listAllVolumes(0):
            root = ET.fromstring(other.XMLDesc(0))  # noqa: S314 - libvirt's XML
            if root.findtext("backingStore/path") == path:
                children.append(other.name())
        if children:
            raise Conflict(f"volume {name!r} is the origin of LVM snapshot(s) "
                           f"{', '.join(sorted(children))}: delete them first",
                           code="volume_has_snapshots")
        self._lvm_call(vol.delete, self.delete_flags, what=f"delete logical volume {name}")

    def _lvm_call(self, func: Any, *args: Any, what: str) -> Any:
        """Like ``call_libvirt``, with LVM's own reason on one line."""
        try:
            return call_libvirt(func, *args, what=what)
        except StorageError as exc:
            raise StorageError(f"cannot {what} in volume group {self.vg_name!r}: "
                               f"{lvm_reason(str(exc.__cause__ or exc))}",
                               code="lvm_failed") from exc


class NetworkLVMStorage(LVMStorage):
    """A volume group on a shared LUN (iSCSI or FC) that every node sees.

    Disks live once, on the LUN: VMs migrate without copying them (``shared``). The storage
    admin creates the VG once (``vgcreate --shared`` for lvmlockd); the panel never builds
    it, so ``devices`` is not an option. Each node's pool only checks, through libvirt,
    that it sees the VG.

    Be aware: libvirt's logical back end runs plain ``lvcreate``/``lvremove`` and, when it
    starts a pool, ``vgchange -aly`` (activate every LV on this node). It takes no cluster
    lock itself. Safe concurrent use therefore needs LVM's own cluster locking: ``lvmlockd``
    (with sanlock or dlm) running on every node and the VG created as a shared VG. Without
    it, two nodes changing the VG's metadata at the same time (creating or deleting disks)
    can corrupt it, and nothing stops two nodes from writing the same LV. With lvmlockd,
    activation modes (exclusive vs shared) decide where a pool may start and whether a live
    migration can open the LV on both nodes; check your lvmlockd setup against that. This
    back end has not been run against a real shared LUN here (no device-mapper).
    """

    name: ClassVar[str] = "network_lvm"
    description: ClassVar[str] = ("Shared LVM volume group on an iSCSI/FC LUN seen by every "
                                  "node (live migration without copying); needs cluster "
                                  "locking (lvmlockd) for safe concurrent use")
    shared: ClassVar[bool] = True
    build_flags: ClassVar[int | None] = None
    options_schema: ClassVar[dict] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["vg_name"],
        "properties": {
            "vg_name": {**VG_NAME, "description": "Name of the shared volume group, created "
                                                  "beforehand on the LUN"},
        },
    }

    missing_vg_hint: ClassVar[str] = ("check that the node sees the shared LUN and, for a "
                                      "shared VG, that lvmlockd runs there")
