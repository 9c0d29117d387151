"""The backup target contract: implemented by plugins in a later issue."""

from __future__ import annotations

from typing import Any, BinaryIO, ClassVar


class BackupTarget:
    """Where backups are written (local disk, FTP, ...)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def __init__(self, target: dict[str, Any]) -> None:
        self.target = target
        self.options: dict[str, Any] = target.get("options", {})

    def upload(self, name: str, stream: BinaryIO) -> None:
        raise NotImplementedError

    def download(self, name: str) -> BinaryIO:
        raise NotImplementedError
