"""Recipe source ``folder``: the ``*.sh`` files of a directory on the panel's machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from hypervisor_panel.recipes import (
    MAX_RECIPE_BYTES,
    MAX_RECIPES,
    RecipeSource,
    RecipeSourceUnavailable,
    RecipeText,
    UnsafeSource,
)
from hypervisor_panel.validation import PLAIN_PATH_PATTERN


class FolderSource(RecipeSource):
    name: ClassVar[str] = "folder"
    description: ClassVar[str] = "The *.sh recipe scripts of a folder on the panel's machine"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "pattern": PLAIN_PATH_PATTERN, "maxLength": 4096,
                     "description": "absolute path of the folder"},
            "recursive": {"type": "boolean", "default": False,
                          "description": "also read the folders inside it"},
        },
    }

    def recipes(self, options: dict[str, Any]) -> Iterator[RecipeText]:
        root = Path(options["path"])
        if not root.is_dir():
            raise RecipeSourceUnavailable(f"{root} is not a folder", code="no_such_folder")
        real = root.resolve()
        pattern = "**/*.sh" if options.get("recursive") else "*.sh"
        try:
            paths = sorted(root.glob(pattern))
        except OSError as exc:
            raise RecipeSourceUnavailable(f"cannot read {root}: {exc.strerror}") from exc
        if len(paths) > MAX_RECIPES:
            raise UnsafeSource(f"{root} holds more than {MAX_RECIPES} recipes",
                               code="too_many_recipes")
        for path in paths:
            target = path.resolve()
            if not target.is_relative_to(real):
                raise UnsafeSource(f"{path} links outside {root}", code="unsafe_link")
            if not target.is_file():
                continue
            try:
                with open(target, "rb") as fh:
                    raw = fh.read(MAX_RECIPE_BYTES + 1)
            except OSError as exc:
                raise RecipeSourceUnavailable(f"cannot read {path}: {exc.strerror}") from exc
            yield RecipeText(raw.decode("utf-8", errors="replace"),
                             path.relative_to(root).as_posix())
