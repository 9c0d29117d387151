"""The storage contract: a back end turns a storage record into a libvirt pool and volumes.

A back end declares ``name``, ``description``, ``shared`` (network storage: VMs migrate
without copying disks), ``copy_on_write`` (clones share the image's data) and an
``options_schema`` (JSON Schema: the API validates storage options with it and the web UI
renders its form from it; properties marked ``writeOnly`` are secrets, never returned).

XML generation is pure (``pool_xml``, ``volume_xml``, ``clone_xml``, ``disk``); side effects
live in ``prepare`` (secrets, reachability checks) and in the volume operations (libvirt's
storage API by default): a third party adds iSCSI or GlusterFS with a subclass alone.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any, BinaryIO, ClassVar

import libvirt

from .errors import Conflict, Invalid, NotFound, PanelError
from .virt.domain_xml import Disk
from .virt.errors import libvirt_message

__all__ = ["GIB", "STREAM_CHUNK", "BackingFileClones", "Disk", "StorageBackend",
           "StorageError", "call_libvirt", "libvirt_message", "same_pool", "volume_format_of"]

GIB = 1024**3
STREAM_CHUNK = 4 * 1024 * 1024
#: qcow2 volumes are made v3 (libvirt's default is 0.10, which cannot hold dirty bitmaps).
QCOW2_COMPAT = "1.1"


class StorageError(PanelError):
    """A storage operation failed on a node (message says which and why)."""

    status, code = 422, "storage_error"


class StorageBackend:
    """Base class for storage back ends; register subclasses via ``register_storage_backends``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: Network storage reachable from every node (live migration without copying disks).
    shared: ClassVar[bool] = False
    #: ``clone_volume`` makes a copy-on-write clone rather than a full copy.
    copy_on_write: ClassVar[bool] = False
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    volume_format: ClassVar[str] = "qcow2"
    #: Formats an admin may choose for new volumes (the first is the default).
    volume_formats: ClassVar[tuple[str, ...]] = ()
    #: libvirt pool build flags, or None when the pool must not be built by the panel.
    build_flags: ClassVar[int | None] = None
    #: Flags for ``virStorageVol.delete`` (RBD needs WITH_SNAPSHOTS for clone parents).
    delete_flags: ClassVar[int] = 0

    def __init__(self, storage: dict[str, Any]) -> None:
        self.storage = storage
        self.options: dict[str, Any] = storage.get("options", {})

    # -- pure parts ------------------------------------------------------------------
    @property
    def pool_name(self) -> str:
        return f"hvp-{self.storage['name']}"

    def pool_xml(self) -> str:
        """The libvirt pool XML for this storage."""
        raise NotImplementedError

    def volume_xml(self, name: str, capacity: int, fmt: str | None = None) -> str:
        """The libvirt volume XML for a new, empty volume of ``capacity`` bytes."""
        return ET.tostring(self._volume_element(name, capacity, fmt), encoding="unicode")

    def clone_xml(self, name: str, capacity: int, source: libvirt.virStorageVol) -> str:
        """The volume XML for a clone of ``source``; default: same as a new volume."""
        return self.volume_xml(name, capacity)

    def _volume_element(self, name: str, capacity: int, fmt: str | None = None) -> ET.Element:
        vol = ET.Element("volume")
        ET.SubElement(vol, "name").text = name
        ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
        ET.SubElement(vol, "allocation", unit="bytes").text = "0"
        fmt = fmt or self.volume_format
        if fmt:
            target = ET.SubElement(vol, "target")
            ET.SubElement(target, "format", type=fmt)
            if fmt == "qcow2":  # v3: dirty bitmaps (incremental backups) need it
                ET.SubElement(target, "compat").text = QCOW2_COMPAT
        return vol

    def volume_name(self, vm: dict[str, Any], index: int = 0) -> str:
        suffix = f".{self.volume_format}" if self.volume_format in ("qcow2", "raw") else ""
        return f"{vm['domain_name']}-disk{index}{suffix}"

    def disk(self, volume: libvirt.virStorageVol, target: str = "vda") -> Disk:
        """The guest disk that points at ``volume`` (a file by default)."""
        return Disk(
            source_type="file",
            source={"file": volume.path()},
            driver_type=self.volume_format or "raw",
            target=target,
        )

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Refuse (4xx PanelError) what the schema cannot judge, before any change."""

    @property
    def folder(self) -> str | None:
        """The folder on every node that holds the volumes as files (None: not files)."""
        return None

    @classmethod
    def public_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Options without the secrets (schema properties marked ``writeOnly``)."""
        secret = {k for k, p in cls.options_schema.get("properties", {}).items()
                  if p.get("writeOnly")}
        return {k: v for k, v in options.items() if k not in secret}

    # -- pools (side effects) --------------------------------------------------------
    def prepare(self, conn: libvirt.virConnect) -> None:
        """Side effects needed before the pool is defined (secrets, checks). Default: none."""

    def cleanup(self, conn: libvirt.virConnect) -> None:
        """Undo ``prepare`` when the storage is removed from a node. Default: nothing."""

    def ensure_pool(
        self, conn: libvirt.virConnect, *, adopt: bool = True
    ) -> libvirt.virStoragePool:
        """Define, build and start the pool on ``conn``; undo what it did if a step fails.

        ``adopt=False`` (a new storage) refuses a pool of the same name that points
        somewhere else, rather than silently taking over something the panel did not make.
        """
        try:
            pool = conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError:
            pool = None
        if pool is not None and not adopt and not same_pool(pool.XMLDesc(0), self.pool_xml()):
            raise Conflict(f"a different libvirt pool named {self.pool_name!r} already exists "
                           "on the node; choose another storage name", code="pool_exists")
        if pool is not None:
            if not pool.isActive():
                self.prepare(conn)
                call_libvirt(pool.create, 0, what=f"start pool {self.pool_name}")
            return pool
        self.prepare(conn)
        try:
            pool = call_libvirt(conn.storagePoolDefineXML, self.pool_xml(), 0, what="define pool")
        except PanelError:
            self.cleanup(conn)
            raise
        try:
            if self.build_flags is not None:
                call_libvirt(pool.build, self.build_flags, what=f"build pool {self.pool_name}")
            call_libvirt(pool.create, 0, what=f"start pool {self.pool_name}")
            pool.setAutostart(1)
        except Exception:
            try:
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
            except libvirt.libvirtError:
                pass
            self.cleanup(conn)
            raise
        return pool

    def remove_pool(self, conn: libvirt.virConnect) -> None:
        """Stop and undefine the pool (volumes stay where they are), then ``cleanup``."""
        try:
            pool = conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError:
            pool = None
        if pool is not None:
            if pool.isActive():
                pool.destroy()
            pool.undefine()
        self.cleanup(conn)

    def pool(self, conn: libvirt.virConnect) -> libvirt.virStoragePool:
        try:
            pool = conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError as exc:
            raise StorageError(f"storage {self.storage['name']!r} is not defined on this node: "
                               f"{libvirt_message(exc)}") from exc
        if not pool.isActive():
            call_libvirt(pool.create, 0, what=f"start pool {self.pool_name}")
        return pool

    def capacity(self, conn: libvirt.virConnect) -> dict[str, int]:
        """Pool capacity, allocation and available bytes."""
        pool = self.pool(conn)
        call_libvirt(pool.refresh, 0, what=f"refresh pool {self.pool_name}")
        _state, capacity, allocation, available = pool.info()
        return {"capacity": capacity, "allocation": allocation, "available": available}

    # -- volumes ---------------------------------------------------------------------
    def lookup_volume(self, conn: libvirt.virConnect, name: str) -> libvirt.virStorageVol:
        pool = self.pool(conn)
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            raise NotFound(f"volume {name!r} not found in storage {self.storage['name']!r}",
                           code="volume_not_found") from exc

    def list_volumes(self, conn: libvirt.virConnect) -> list[dict[str, Any]]:
        pool = self.pool(conn)
        call_libvirt(pool.refresh, 0, what=f"refresh pool {self.pool_name}")
        out = []
        for vol in pool.listAllVolumes(0):
            _type, capacity, allocation = vol.info()
            out.append({"name": vol.name(), "capacity": capacity, "allocation": allocation})
        return sorted(out, key=lambda v: v["name"])

    def _check_new(self, pool: libvirt.virStoragePool, name: str, capacity: int) -> None:
        try:
            pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            pass
        else:
            raise Conflict(f"volume {name!r} already exists in {self.storage['name']!r}",
                           code="volume_exists")
        if not self.thin_provisioned():
            _state, _cap, _alloc, available = pool.info()
            if capacity > available:
                raise Invalid(f"{_gib(capacity)} does not fit in storage "
                              f"{self.storage['name']!r} ({_gib(available)} free)",
                              code="no_space")

    def thin_provisioned(self) -> bool:
        """Whether new volumes take no space up front (qcow2 files, RBD images)."""
        return self.volume_format == "qcow2"

    def create_volume(
        self, conn: libvirt.virConnect, name: str, capacity: int, fmt: str | None = None
    ) -> libvirt.virStorageVol:
        """A new empty volume; ``fmt`` picks one of ``volume_formats`` (default: the first)."""
        if fmt is not None and fmt != self.volume_format and fmt not in self.volume_formats:
            choices = ", ".join(self.volume_formats or (self.volume_format,))
            raise Invalid(f"storage {self.storage['name']!r} makes {choices} volumes, "
                          f"not {fmt}", code="unsupported_format")
        pool = self.pool(conn)
        self._check_new(pool, name, capacity)
        return call_libvirt(pool.createXML, self.volume_xml(name, capacity, fmt), 0,
                            what=f"create volume {name}")

    def clone_volume(
        self, conn: libvirt.virConnect, source_name: str, name: str, capacity: int | None = None
    ) -> libvirt.virStorageVol:
        """A new volume with ``source_name``'s content: copy-on-write where the back end can.

        The clone is at least as large as the source; ``capacity`` grows it further.
        """
        pool = self.pool(conn)
        source = self.lookup_volume(conn, source_name)
        source_capacity = source.info()[1]
        size = max(capacity or 0, source_capacity)
        self._check_new(pool, name, 0 if self.copy_on_write else size)
        clone = self._clone(pool, source, name, size)
        try:
            if clone.info()[1] < size:
                call_libvirt(clone.resize, size, 0, what=f"grow volume {name}")
        except PanelError:
            self._delete(clone, name)
            raise
        return clone

    def _clone(self, pool: libvirt.virStoragePool, source: libvirt.virStorageVol, name: str,
               size: int) -> libvirt.virStorageVol:
        """Back ends override for their copy-on-write form; default: libvirt's full copy."""
        return call_libvirt(pool.createXMLFrom, self.clone_xml(name, size, source), source, 0,
                     what=f"clone volume {source.name()} to {name}")

    def resize_volume(self, conn: libvirt.virConnect, name: str, capacity: int) -> None:
        vol = self.lookup_volume(conn, name)
        if capacity < vol.info()[1]:
            raise Invalid("volumes can only grow (shrinking would destroy data)",
                          code="shrink_refused")
        if not self.thin_provisioned():
            available = self.pool(conn).info()[3]
            if capacity - vol.info()[1] > available:
                raise Invalid(f"growing {name} by {_gib(capacity - vol.info()[1])} does not fit "
                              f"({_gib(available)} free)", code="no_space")
        call_libvirt(vol.resize, capacity, 0, what=f"resize volume {name}")

    def delete_volume(self, conn: libvirt.virConnect, name: str) -> None:
        pool = self.pool(conn)
        try:
            vol = pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return
        self._delete(vol, name)

    def _delete(self, vol: libvirt.virStorageVol, name: str) -> None:
        call_libvirt(vol.delete, self.delete_flags, what=f"delete volume {name}")

    # -- streaming (backups, image import) ------------------------------------------
    def download(self, conn: libvirt.virConnect, name: str) -> Iterator[bytes]:
        """Yield the volume's bytes (libvirt stream: works on remote nodes too)."""
        vol = self.lookup_volume(conn, name)
        stream = conn.newStream(0)
        call_libvirt(vol.download, stream, 0, 0, 0, what=f"download volume {name}")
        try:
            while True:
                chunk = stream.recv(STREAM_CHUNK)
                if chunk in (-2, None):
                    continue
                if not chunk:
                    break
                yield chunk
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    def upload(self, conn: libvirt.virConnect, name: str, source: BinaryIO, length: int,
               fresh: bool = False) -> None:
        """Write ``length`` bytes from ``source`` into volume ``name`` (``fresh``: it was
        just made and reads as zeros, so zero chunks may be skipped)."""
        vol = self.lookup_volume(conn, name)
        if length > vol.info()[1]:
            raise Invalid(f"{length} bytes do not fit in volume {name!r} "
                          f"({vol.info()[1]} bytes)", code="too_large")
        stream = conn.newStream(0)
        call_libvirt(vol.upload, stream, 0, length, 0, what=f"upload to volume {name}")
        sent = 0
        try:
            while sent < length:
                chunk = source.read(min(STREAM_CHUNK, length - sent))
                if not chunk:
                    raise Invalid(f"the upload ended after {sent} of {length} bytes",
                                  code="short_upload")
                stream.send(chunk)
                sent += len(chunk)
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise


class BackingFileClones:
    """Mixin for file pools (dir, NFS, ...): clones are qcow2 overlays on their image.

    The overlay's backing file is the source volume, so a clone costs a few kilobytes
    whatever the image's size (a linked clone, as Proxmox and VMmanager make them).
    """

    copy_on_write: ClassVar[bool] = True

    def clone_xml(self, name: str, capacity: int, source: libvirt.virStorageVol) -> str:
        vol = self._volume_element(name, capacity, "qcow2")  # type: ignore[attr-defined]
        backing = ET.SubElement(vol, "backingStore")
        ET.SubElement(backing, "path").text = source.path()
        ET.SubElement(backing, "format", type=volume_format_of(source))
        return ET.tostring(vol, encoding="unicode")

    def _clone(self, pool: libvirt.virStoragePool, source: libvirt.virStorageVol, name: str,
               size: int) -> libvirt.virStorageVol:
        return call_libvirt(pool.createXML, self.clone_xml(name, size, source), 0,
                            what=f"create a linked clone of {source.name()}")


def volume_format_of(vol: libvirt.virStorageVol) -> str:
    """A volume's format as libvirt reports it (raw when it reports none)."""
    root = ET.fromstring(vol.XMLDesc(0))  # noqa: S314 - libvirt's XML
    fmt = root.find("target/format")
    return fmt.get("type", "raw") if fmt is not None else "raw"


def same_pool(existing_xml: str, wanted_xml: str) -> bool:
    """Whether two pool definitions name the same type, source and target."""

    def key(xml: str) -> tuple:
        root = ET.fromstring(xml)  # noqa: S314 - our XML and libvirt's
        source = root.find("source")
        source_key = tuple(sorted(
            (el.tag, tuple(sorted(el.attrib.items())), (el.text or "").strip())
            for el in (source.iter() if source is not None else [])
            if el.tag not in ("source", "auth", "secret")
        ))
        return root.get("type"), root.findtext("target/path"), source_key

    return key(existing_xml) == key(wanted_xml)


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def call_libvirt(func: Any, *args: Any, what: str) -> Any:
    """Run a libvirt call, turning its error into a StorageError that says what failed."""
    try:
        return func(*args)
    except libvirt.libvirtError as exc:
        raise StorageError(f"cannot {what}: {libvirt_message(exc)}") from exc
