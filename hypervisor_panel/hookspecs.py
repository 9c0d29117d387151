"""The plugin contract: every hook a plugin may implement.

Hooks are called with keyword arguments only; an implementation takes just the arguments
it needs. Every ``register_*`` hook returns a list; the lists of all plugins are collected
by one code path (``registry.py``): items are combined by name, a name registered by two
plugins stops start-up with both plugins named, and each options schema is checked.
Documented, with exact signatures, in ``docs/plugin_hooks.md`` (a test fails when a hook
is missing there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .backup import BackupTarget
    from .events import EventRecord
    from .host import PanelHost
    from .network import NetworkMode
    from .os_templates import OSTemplateSource
    from .recipes import RecipeSource
    from .routes import Route
    from .storage import StorageBackend
    from .virt.domain_xml import DomainBuilder
    from .vms.records import VMRecord

PROJECT = "hypervisor_panel"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_storage_backends(panel: PanelHost) -> list[type[StorageBackend]]:
    """Return StorageBackend subclasses (dir, LVM, NFS, RBD, ...), unique by ``name``."""


@hookspec
def register_network_modes(panel: PanelHost) -> list[type[NetworkMode]]:
    """Return NetworkMode subclasses (bridged, NAT, user-mode, ...), unique by ``name``."""


@hookspec
def register_os_template_sources(panel: PanelHost) -> list[OSTemplateSource]:
    """Return OSTemplateSource instances that offer OS templates, unique by ``name``."""


@hookspec
def register_recipe_sources(panel: PanelHost) -> list[RecipeSource]:
    """Return RecipeSource instances that offer recipes, unique by ``name``."""


@hookspec
def register_backup_targets(panel: PanelHost) -> list[type[BackupTarget]]:
    """Return BackupTarget subclasses (local disk, FTP, ...), unique by ``name``."""


@hookspec
def register_routes(panel: PanelHost) -> list[Route]:
    """Return API routes (declare them on a ``routes.RouteTable``), unique by method and
    path; they get authentication, roles, validation and a place in the OpenAPI document."""


@hookspec(firstresult=True)
def default_storage(panel: PanelHost) -> dict[str, Any] | None:
    """Return the storage to create at first start when there is none (``{"name",
    "backend", "options"}``, validated like ``POST /storages``); the first non-None wins."""


@hookspec
def prepare_domain(panel: PanelHost, vm: VMRecord, domain: DomainBuilder) -> None:
    """Adjust ``domain`` for ``vm`` before its XML is defined; every plugin is called, in
    registration order; return values are ignored."""


@hookspec
def startup(panel: PanelHost) -> None:
    """Run once after the panel is built and before it serves requests (every plugin)."""


@hookspec
def shutdown(panel: PanelHost) -> None:
    """Run once when the panel stops; release what ``startup`` took (every plugin)."""


@hookspec
def track_event(panel: PanelHost, event: EventRecord) -> None:
    """Observe an event (audit log, notifications): every plugin sees every event; one that
    raises is logged and never fails the action that caused the event."""
