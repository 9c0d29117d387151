"""One way to collect every ``register_*`` hook: by name, duplicates refused, schemas checked.

Each plugin's implementation is called on its own, so an error names the plugin: a name
registered twice gives "plugins 'a' and 'b' both register storage back end 'dir'", a bad
options schema or a wrong item type names the plugin that returned it. Start-up stops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import pluggy

from .backup import BackupTarget
from .errors import PluginLoadError
from .network import NetworkMode
from .os_templates import OSTemplateSource
from .recipes import RecipeSource
from .routes import Route, RouteTable
from .storage import StorageBackend
from .validation import check_schema

T = TypeVar("T")


def _call_each(pm: pluggy.PluginManager, hook: str, kwargs: dict[str, Any]
               ) -> list[tuple[str, list[Any]]]:
    """(plugin name, returned list) per implementation, in registration order."""
    out = []
    for impl in getattr(pm.hook, hook).get_hookimpls():
        try:
            result = impl.function(*(kwargs[name] for name in impl.argnames))
        except Exception as exc:
            raise PluginLoadError(f"plugin {impl.plugin_name!r} failed in {hook}: "
                                  f"{exc}") from exc
        if result is None:
            continue
        if not isinstance(result, list | tuple):
            raise PluginLoadError(f"plugin {impl.plugin_name!r}: {hook} must return a "
                                  f"list, not {type(result).__name__}")
        out.append((impl.plugin_name, list(result)))
    return out


def _check_class(base: type) -> Callable[[Any], None]:
    def check(item: Any) -> None:
        if not (isinstance(item, type) and issubclass(item, base)):
            raise TypeError(f"{item!r} is not a {base.__name__} subclass")
        if not isinstance(getattr(item, "name", None), str) or not item.name:
            raise TypeError(f"{item.__name__} has no name")
        check_schema(item.options_schema)
    return check


def _check_instance(base: type) -> Callable[[Any], None]:
    def check(item: Any) -> None:
        if not isinstance(item, base):
            raise TypeError(f"{item!r} is not a {base.__name__}")
        if not getattr(item, "name", ""):
            raise TypeError(f"a {base.__name__} has no name")
    return check


def collect(pm: pluggy.PluginManager, hook: str, what: str, kwargs: dict[str, Any],
            check: Callable[[Any], None]) -> dict[str, Any]:
    """Every plugin's items of ``hook`` by name (see the module docstring)."""
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for plugin, items in _call_each(pm, hook, kwargs):
        for item in items:
            try:
                check(item)
            except Exception as exc:
                raise PluginLoadError(f"plugin {plugin!r} registers a bad {what}: "
                                      f"{exc}") from exc
            name = item.name
            if name in found:
                raise PluginLoadError(f"plugins {owners[name]!r} and {plugin!r} both "
                                      f"register {what} {name!r}")
            found[name], owners[name] = item, plugin
    return found


def collect_routes(pm: pluggy.PluginManager, kwargs: dict[str, Any]) -> list[Route]:
    """Plugin routes, each marked with its plugin; a method + path twice is refused."""
    table = RouteTable()
    for plugin, items in _call_each(pm, "register_routes", kwargs):
        for item in items:
            if not isinstance(item, Route):
                raise PluginLoadError(f"plugin {plugin!r}: register_routes must return "
                                      f"Route objects, not {type(item).__name__}")
            try:
                if item.body is not None:
                    check_schema(item.body)
                table.add(dataclasses.replace(item, owner=plugin))
            except Exception as exc:
                raise PluginLoadError(f"plugin {plugin!r}: {exc}") from exc
    return list(table)


@dataclasses.dataclass
class Registry:
    """Everything the plugins registered."""

    storage_backends: dict[str, type[StorageBackend]]
    network_modes: dict[str, type[NetworkMode]]
    os_template_sources: dict[str, OSTemplateSource]
    recipe_sources: dict[str, RecipeSource]
    backup_targets: dict[str, type[BackupTarget]]

    @classmethod
    def collect(cls, pm: pluggy.PluginManager, panel: Any) -> Registry:
        kw = {"panel": panel}
        return cls(
            storage_backends=collect(pm, "register_storage_backends", "storage back end",
                                     kw, _check_class(StorageBackend)),
            network_modes=collect(pm, "register_network_modes", "network mode", kw,
                                  _check_class(NetworkMode)),
            os_template_sources=collect(pm, "register_os_template_sources",
                                        "OS template source", kw,
                                        _check_instance(OSTemplateSource)),
            recipe_sources=collect(pm, "register_recipe_sources", "recipe source", kw,
                                   _check_instance(RecipeSource)),
            backup_targets=collect(pm, "register_backup_targets", "backup target", kw,
                                   _check_class(BackupTarget)),
        )
