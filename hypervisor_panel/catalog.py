"""The loaded plugins as the API shows them: name, module, distribution, hooks."""

from __future__ import annotations

import pluggy

from .errors import NotFound


def plugin_info(pm: pluggy.PluginManager) -> list[dict]:
    """Describe loaded plugins: name, module, distribution, hooks implemented."""
    meta: dict[str, dict] = getattr(pm, "hvp_meta", {})
    items = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        items.append(
            {
                "id": name,
                "name": name,
                "module": getattr(plugin, "__name__", type(plugin).__name__),
                "hooks": hooks,
                **meta.get(name, {"distribution": None, "version": None, "builtin": False}),
            }
        )
    return sorted(items, key=lambda p: p["name"])


class PluginCatalog:
    """The loaded plugins, as the API shows them."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    def items(self) -> list[dict]:
        return plugin_info(self.pm)

    def get(self, plugin_id: str) -> dict:
        for item in self.items():
            if item["id"] == plugin_id:
                return item
        raise NotFound(f"plugin {plugin_id!r} not loaded", code="plugin_not_found")
