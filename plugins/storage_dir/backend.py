"""The ``dir`` back end: libvirt ``dir`` pool; qcow2 files; backing-file linked clones."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import ClassVar

from hypervisor_panel.storage import BackingFileClones, StorageBackend
from hypervisor_panel.validation import check_host_path

PATH_PATTERN = r"^/(?!.*(^|/)\.\.(/|$))[A-Za-z0-9._/+-]*$"
DEFAULT_PATH = "/var/lib/libvirt/images/hvp"


class DirStorage(BackingFileClones, StorageBackend):
    """Files in a directory on every node (local storage: migrations copy the disks)."""

    name: ClassVar[str] = "dir"
    description: ClassVar[str] = "Directory on each node (qcow2 files, linked clones)"
    shared: ClassVar[bool] = False
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
                "description": "Absolute path on every node; created if missing; "
                               "system folders are refused",
                "pattern": PATH_PATTERN,
                "minLength": 2,
                "maxLength": 255,
                "default": DEFAULT_PATH,
            }
        },
    }

    @classmethod
    def check_options(cls, options: dict) -> None:
        """The folder must not be (or resolve into) a system folder: see hypervisor_panel
        ``paths`` (a pool at /etc would make every file there a deletable volume)."""
        check_host_path(options.get("path"), "a storage directory")

    @property
    def folder(self) -> str | None:
        return self.options.get("path")

    def pool_xml(self) -> str:
        pool = ET.Element("pool", type="dir")
        ET.SubElement(pool, "name").text = self.pool_name
        target = ET.SubElement(pool, "target")
        ET.SubElement(target, "path").text = self.options["path"]
        return ET.tostring(pool, encoding="unicode")
