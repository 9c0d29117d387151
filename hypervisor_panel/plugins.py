"""Plugin manager factory: built-ins and third-party plugins load the same way."""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginLoadError

ENTRY_POINT_GROUP = "hypervisor_panel"
log = logging.getLogger(__name__)


def _allowed(env_value: str | None) -> set[str] | None:
    """Parse ``HVP_PLUGINS`` ("a,b,c"); None means every installed plugin loads."""
    if env_value is None or not env_value.strip():
        return None
    return {name.strip() for name in env_value.split(",") if name.strip()}


def get_plugin_manager(
    plugins: list[str] | None = None, extra: list[object] | None = None
) -> pluggy.PluginManager:
    """Build a fresh plugin manager.

    Loads every entry point of the ``hypervisor_panel`` group, limited to ``plugins`` or to
    the comma-separated ``HVP_PLUGINS`` environment variable. ``extra`` registers already
    imported plugin objects (used by tests and embedding code). A plugin that fails to
    import raises PluginLoadError naming it: the panel never starts half-loaded.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    allowed = set(plugins) if plugins is not None else _allowed(os.environ.get("HVP_PLUGINS"))
    seen: set[str] = set()
    meta: dict[str, dict] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen or (allowed is not None and ep.name not in allowed):
            continue
        seen.add(ep.name)
        try:
            module = ep.load()
        except Exception as exc:
            raise PluginLoadError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        pm.register(module, name=ep.name)
        dist = ep.dist
        meta[ep.name] = {"distribution": dist.name if dist else None,
                         "version": dist.version if dist else None, "builtin": False}
        meta[ep.name]["builtin"] = module.__name__.startswith("hypervisor_panel_plugins.")
    if allowed is not None:
        missing = allowed - seen
        for name in sorted(missing):
            # Allow HVP_PLUGINS to name an importable module that is not installed as an
            # entry point (a plugin in development).
            try:
                module = importlib.import_module(name)
            except Exception as exc:
                raise PluginLoadError(f"plugin {name!r} is not installed: {exc}") from exc
            pm.register(module, name=name)
            meta[name] = {"distribution": None, "version": None, "builtin": False}
    for obj in extra or []:
        pm.register(obj)
    pm.check_pending()
    pm.hvp_meta = meta  # type: ignore[attr-defined]
    return pm


def call_each(hook: pluggy.HookCaller, **kwargs: Any) -> None:
    """Call every plugin's implementation of an observer hook (``track_event``) on its
    own: one that raises is logged, naming the plugin, and the others still run."""
    for impl in reversed(hook.get_hookimpls()):  # pluggy's order: last registered first
        if impl.wrapper or impl.hookwrapper:
            continue
        try:
            impl.function(*[kwargs[name] for name in impl.argnames])
        except Exception:
            log.exception("plugin %s failed in %s", impl.plugin_name, hook.name)
