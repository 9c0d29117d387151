"""The ``folder`` source: an index file and images in a directory of the panel's host."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from hypervisor_panel.os_templates import (
    INDEX_MAX_BYTES,
    BadIndex,
    OSTemplateSource,
    SourceUnavailable,
    TemplateEntry,
    check_relative_path,
    parse_index,
)
from hypervisor_panel.validation import PLAIN_PATH_PATTERN

PATH_PATTERN = PLAIN_PATH_PATTERN
INDEX_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class FolderSource(OSTemplateSource):
    """A directory holding ``index.json`` and the files it lists (nothing outside it)."""

    name: ClassVar[str] = "folder"
    description: ClassVar[str] = "A directory on the panel's host with an index.json"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["path"],
        "properties": {
            "path": {"type": "string", "title": "Directory", "pattern": PATH_PATTERN,
                     "maxLength": 1024, "description": "absolute path of the repository"},
            "index": {"type": "string", "title": "Index file", "pattern": INDEX_NAME,
                      "default": "index.json"},
        },
    }

    def _root(self, options: dict[str, Any]) -> Path:
        return Path(options["path"]).resolve()

    def read_index(self, options: dict[str, Any]) -> list[TemplateEntry]:
        path = self._root(options) / options.get("index", "index.json")
        try:
            with open(path, "rb") as fh:
                data = fh.read(INDEX_MAX_BYTES + 1)
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {path}: {exc.strerror or exc}") from exc
        return parse_index(data, str(path))

    def open(self, options: dict[str, Any], entry: TemplateEntry,
             offset: int = 0) -> tuple[BinaryIO, int]:
        root = self._root(options)
        path = (root / check_relative_path(entry["file"])).resolve()
        if not path.is_relative_to(root):
            raise BadIndex(f"{entry['file']!r} leads outside the repository (a link?)",
                           code="unsafe_path")
        try:
            fh = open(path, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {path}: {exc.strerror or exc}") from exc
        size = os.fstat(fh.fileno()).st_size
        fh.seek(offset)
        return fh, size
