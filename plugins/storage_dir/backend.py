"""The ``dir`` back end: libvirt ``dir`` pool; qcow2 files; backing-file linked clones."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import ClassVar

import libvirt

from hypervisor_panel.storage import StorageBackend, call_libvirt

PATH_PATTERN = r"^/(?!.*(^|/)\.\.(/|$))[A-Za-z0-9._/+-]*$"


class DirStorage(StorageBackend):
    """Files in a directory on every node (local storage: migrations copy the disks)."""

    name: ClassVar[str] = "dir"
    description: ClassVar[str] = "Directory on each node (qcow2 files, linked clones)"
    shared: ClassVar[bool] = False
    copy_on_write: ClassVar[bool] = True
    volume_formats: ClassVar[tuple[str, ...]] = ("qcow2", "raw")
    build_flags: ClassVar[int | None] = 0
    options_schema: ClassVar[dict] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {
                "type": "string",
                "title": "Directory",
                "description": "Absolute path on every node; created if missing",
                "pattern": PATH_PATTERN,
                "minLength": 2,
                "maxLength": 255,
                "default": "/var/lib/libvirt/images/hvp",
            }
        },
    }

    def pool_xml(self) -> str:
        pool = ET.Element("pool", type="dir")
        ET.SubElement(pool, "name").text = self.pool_name
        target = ET.SubElement(pool, "target")
        ET.SubElement(target, "path").text = self.options["path"]
        return ET.tostring(pool, encoding="unicode")

    def clone_xml(self, name: str, capacity: int, source: libvirt.virStorageVol) -> str:
        """A qcow2 overlay whose backing file is the source image (a linked clone)."""
        vol = self._volume_element(name, capacity)
        backing = ET.SubElement(vol, "backingStore")
        ET.SubElement(backing, "path").text = source.path()
        ET.SubElement(backing, "format", type=_format_of(source))
        return ET.tostring(vol, encoding="unicode")

    def _clone(self, pool: libvirt.virStoragePool, source: libvirt.virStorageVol, name: str,
               size: int) -> libvirt.virStorageVol:
        return call_libvirt(pool.createXML, self.clone_xml(name, size, source), 0,
                            what=f"create a linked clone of {source.name()}")


def _format_of(vol: libvirt.virStorageVol) -> str:
    root = ET.fromstring(vol.XMLDesc(0))  # noqa: S314 - libvirt's XML
    fmt = root.find("target/format")
    return fmt.get("type", "raw") if fmt is not None else "raw"
