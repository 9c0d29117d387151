"""The plugin contract: every hook a plugin may implement.

All hooks are called with keyword arguments only. Hooks named ``register_*`` return a list
that the core concatenates over all plugins. Documented, with exact signatures, in
``docs/plugin_hooks.md`` (a test fails when a hook is missing there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .backup import BackupTarget
    from .network import NetworkMode
    from .os_templates import OSTemplateSource
    from .panel import Panel
    from .recipes import RecipeSource
    from .storage import StorageBackend

PROJECT = "hypervisor_panel"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_storage_backends(panel: Panel) -> list[type[StorageBackend]]:
    """Return a list of StorageBackend subclasses (dir, LVM, NFS, RBD, ...)."""


@hookspec
def register_network_modes(panel: Panel) -> list[type[NetworkMode]]:
    """Return a list of NetworkMode subclasses (bridged, NAT, ...)."""


@hookspec
def register_os_template_sources(panel: Panel) -> list[OSTemplateSource]:
    """Return a list of OSTemplateSource instances that offer OS templates."""


@hookspec
def register_recipe_sources(panel: Panel) -> list[RecipeSource]:
    """Return a list of RecipeSource instances that offer recipes."""


@hookspec
def register_backup_targets(panel: Panel) -> list[type[BackupTarget]]:
    """Return a list of BackupTarget subclasses (local disk, FTP, ...)."""


@hookspec
def register_routes(panel: Panel) -> None:
    """Add API routes through ``panel.api.route(...)``; they appear in the OpenAPI document."""


@hookspec
def prepare_domain(panel: Panel, vm: dict[str, Any], domain: Any) -> None:
    """Adjust the DomainBuilder ``domain`` for ``vm`` before its XML is defined."""


@hookspec
def startup(panel: Panel) -> None:
    """Run once after the panel is built and before it serves requests."""


@hookspec
def shutdown(panel: Panel) -> None:
    """Run once when the panel stops; release what ``startup`` took."""


@hookspec
def track_event(panel: Panel, event: dict[str, Any]) -> None:
    """Observe an event (audit log, notifications); ``event`` has kind, subject, actor, time."""
