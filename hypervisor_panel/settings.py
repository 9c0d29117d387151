"""Cluster-wide settings (owner of the ``settings`` table)."""

from __future__ import annotations

from typing import Any, TypedDict

from .store import Store

TABLE = "settings"
KEY = "cluster"


class Settings(TypedDict, total=False):
    memory_overcommit: float


DEFAULTS: Settings = {"memory_overcommit": 1.0}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"memory_overcommit": {
        "type": "number", "minimum": 0.5, "maximum": 10,
        "description": "RAM that placement may promise, as a multiple of a node's RAM"}},
}
PATCH_SCHEMA = {**SCHEMA, "minProperties": 1}


class SettingsService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self) -> Settings:
        """Every setting, defaults filled in."""
        stored = self.store.get(TABLE, KEY) or {}
        stored.pop("id", None)
        return {**DEFAULTS, **stored}  # type: ignore[typeddict-item]

    def update(self, fields: dict[str, Any]) -> Settings:
        """Change some settings (``fields`` validated against PATCH_SCHEMA by the caller)."""
        with self.store.locked():
            if self.store.get(TABLE, KEY):
                self.store.update(TABLE, KEY, fields)
            else:
                self.store.insert(TABLE, {"id": KEY, **fields})
        return self.get()
