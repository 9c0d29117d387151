"""The recipe source contract: where recipe scripts come from (a folder, a repository URL).

A plugin returns :class:`RecipeSource` instances from ``register_recipe_sources``, unique
by ``name``. The admin adds a *source record* (``POST /api/v1/recipe-sources``) naming a
source and giving options valid against its ``options_schema``; refreshing that record
calls :meth:`RecipeSource.recipes` with those options. The source only yields script
texts: the recipe service parses them (``recipe_format``), skips the invalid ones with
their reason, and adds, updates or removes recipes by internal name and revision.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import Invalid, Unavailable
from .validation import check_schema

__all__ = ["MAX_DOWNLOAD_BYTES", "MAX_RECIPE_BYTES", "MAX_RECIPES", "RecipeSource",
           "RecipeSourceUnavailable", "RecipeText", "UnsafeSource", "check_member_path"]

# Limits every source honours (a recipe bigger than this is refused by the parser too).
MAX_RECIPE_BYTES = 512 * 1024
MAX_RECIPES = 1000  # per source
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # an archive or index as fetched


class RecipeSourceUnavailable(Unavailable):
    """The source cannot be read (no such folder, connection refused, HTTP error)."""

    code = "recipe_source_unreachable"


class UnsafeSource(Invalid):
    """What the source serves is unsafe or too big (a member leaving its folder, a link
    pointing out, a size limit passed, a checksum that does not match)."""

    code = "unsafe_recipe_source"


def check_member_path(path: str) -> str:
    """``path`` when it is relative and stays inside its folder, else UnsafeSource."""
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or "\0" in path
            or re.match(r"^[A-Za-z]:", path) or ".." in parts):
        raise UnsafeSource(f"{path[:200]!r} is not a relative path inside the source",
                           code="unsafe_path")
    return path


@dataclass(frozen=True)
class RecipeText:
    """One recipe script a source offers, and where in the source it was found."""

    script: str
    origin: str  # a path inside the folder or archive, or the script's URL


class RecipeSource:
    """Offers recipe scripts; subclass it and set the three class attributes."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A bad ``options_schema`` fails when the plugin is imported (naming it)."""
        super().__init_subclass__(**kwargs)
        try:
            check_schema(cls.options_schema)
        except Exception as exc:
            raise TypeError(f"recipe source {cls.__name__} ({cls.name!r}) has a bad "
                            f"options_schema: {exc}") from exc

    def recipes(self, options: dict[str, Any]) -> Iterator[RecipeText]:
        """Yield the scripts of a source record with ``options`` (already validated).

        Raise :class:`RecipeSourceUnavailable` when the source cannot be read and
        :class:`UnsafeSource` when it is unsafe or too big: the refresh then fails with
        that message and nothing changes.
        """
        raise NotImplementedError

    def public_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` without the secrets (properties marked ``writeOnly``)."""
        secret = {k for k, p in self.options_schema.get("properties", {}).items()
                  if p.get("writeOnly")}
        return {k: v for k, v in options.items() if k not in secret}

    def info(self) -> dict[str, Any]:
        """What the API shows of this source kind."""
        return {"id": self.name, "name": self.name, "description": self.description,
                "options_schema": self.options_schema}
