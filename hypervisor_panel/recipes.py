"""The recipe source contract: implemented by plugins in a later issue."""

from __future__ import annotations

from typing import Any


class RecipeSource:
    """Offers recipes (software installed after the OS)."""

    name: str = ""

    def list_recipes(self) -> list[dict[str, Any]]:
        """Recipes this source offers: dicts with at least ``id`` and ``name``."""
        raise NotImplementedError
