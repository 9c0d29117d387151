"""The storage contract: a back end turns a storage record into a libvirt pool and volumes.

A back end declares ``name``, ``description``, ``shared`` (network storage: VMs migrate
without copying disks) and an ``options_schema`` (JSON Schema: the API validates storage
options with it and the web UI renders its form from it). XML generation is pure
(``pool_xml``, ``volume_xml``, ``disk``); side effects live in ``prepare`` and in the volume
operations, which default to libvirt's storage API.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, ClassVar

import libvirt

from .errors import Conflict, Invalid, PanelError
from .virt.domain_xml import Disk

GIB = 1024**3


class StorageError(PanelError):
    """A storage operation failed on a node (message says which and why)."""

    status, code = 422, "storage_error"


class StorageBackend:
    """Base class for storage back ends; subclass and register via ``register_storage_backends``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    shared: ClassVar[bool] = False
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    volume_format: ClassVar[str] = "qcow2"
    #: libvirt pool build flags, or None when the pool must not be built by the panel.
    build_flags: ClassVar[int | None] = None

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

    def volume_xml(self, name: str, capacity: int) -> str:
        """The libvirt volume XML for a new, empty volume of ``capacity`` bytes."""
        vol = ET.Element("volume")
        ET.SubElement(vol, "name").text = name
        ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
        ET.SubElement(vol, "allocation", unit="bytes").text = "0"
        target = ET.SubElement(vol, "target")
        ET.SubElement(target, "format", type=self.volume_format)
        return ET.tostring(vol, encoding="unicode")

    def volume_name(self, vm: dict[str, Any], index: int = 0) -> str:
        suffix = f".{self.volume_format}" if self.volume_format in ("qcow2", "raw") else ""
        return f"{vm['domain_name']}-disk{index}{suffix}"

    def disk(self, volume: libvirt.virStorageVol, target: str = "vda") -> Disk:
        """The guest disk that points at ``volume``."""
        return Disk(
            source_type="file",
            source={"file": volume.path()},
            driver_type=self.volume_format,
            target=target,
        )

    # -- side effects ----------------------------------------------------------------
    def prepare(self, conn: libvirt.virConnect) -> None:
        """Side effects needed before the pool is defined (secrets, checks). Default: none."""

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
                _call(pool.create, 0, what=f"start pool {self.pool_name}")
            return pool
        self.prepare(conn)
        pool = _call(conn.storagePoolDefineXML, self.pool_xml(), 0, what="define pool")
        try:
            if self.build_flags is not None:
                _call(pool.build, self.build_flags, what=f"build pool {self.pool_name}")
            _call(pool.create, 0, what=f"start pool {self.pool_name}")
            pool.setAutostart(1)
        except Exception:
            try:
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
            except libvirt.libvirtError:
                pass
            raise
        return pool

    def remove_pool(self, conn: libvirt.virConnect) -> None:
        """Stop and undefine the pool (volumes stay where they are)."""
        try:
            pool = conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError:
            return
        if pool.isActive():
            pool.destroy()
        pool.undefine()

    def pool(self, conn: libvirt.virConnect) -> libvirt.virStoragePool:
        try:
            pool = conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError as exc:
            raise StorageError(f"storage {self.storage['name']!r} is not defined on this node: "
                               f"{_msg(exc)}") from exc
        if not pool.isActive():
            _call(pool.create, 0, what=f"start pool {self.pool_name}")
        return pool

    def capacity(self, conn: libvirt.virConnect) -> dict[str, int]:
        """Pool capacity, allocation and available bytes."""
        pool = self.pool(conn)
        pool.refresh(0)
        _state, capacity, allocation, available = pool.info()
        return {"capacity": capacity, "allocation": allocation, "available": available}

    def create_volume(
        self, conn: libvirt.virConnect, name: str, capacity: int
    ) -> libvirt.virStorageVol:
        pool = self.pool(conn)
        try:
            pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            pass
        else:
            raise Conflict(f"volume {name!r} already exists in {self.storage['name']!r}",
                           code="volume_exists")
        _state, _cap, _alloc, available = pool.info()
        if self.volume_format != "qcow2" and capacity > available:
            raise Invalid(f"{capacity // GIB} GiB does not fit in storage "
                          f"{self.storage['name']!r} ({available // GIB} GiB free)",
                          code="no_space")
        return _call(pool.createXML, self.volume_xml(name, capacity), 0,
                     what=f"create volume {name}")

    def delete_volume(self, conn: libvirt.virConnect, name: str) -> None:
        pool = self.pool(conn)
        try:
            vol = pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return
        _call(vol.delete, 0, what=f"delete volume {name}")

    def lookup_volume(self, conn: libvirt.virConnect, name: str) -> libvirt.virStorageVol:
        pool = self.pool(conn)
        return _call(pool.storageVolLookupByName, name, what=f"find volume {name}")


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


def _msg(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()


def _call(func: Any, *args: Any, what: str) -> Any:
    """Run a libvirt call, turning its error into a StorageError that says what failed."""
    try:
        return func(*args)
    except libvirt.libvirtError as exc:
        raise StorageError(f"cannot {what}: {_msg(exc)}") from exc
