"""The OS-template source contract: implemented by plugins in a later issue."""

from __future__ import annotations

from typing import Any


class OSTemplateSource:
    """Offers OS templates (disk images plus install/configuration scripts)."""

    name: str = ""

    def list_templates(self) -> list[dict[str, Any]]:
        """Templates this source offers: dicts with at least ``id`` and ``name``."""
        raise NotImplementedError
