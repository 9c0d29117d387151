"""What a plugin's hooks may use of the panel (the ``panel`` argument of every hook).

A Protocol, so the hook contract depends on the services' types, not on the composition
root that builds them; ``panel.Panel`` satisfies it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .audit import AuditLog
    from .auth import Auth
    from .backups.restoring import BackupRestorer
    from .backups.schedules import ScheduleService
    from .backups.service import BackupService
    from .backups.taking import BackupTaker
    from .backups.targets import BackupTargetService
    from .catalog import PluginCatalog
    from .events import EventLog
    from .ip_pools import IPPoolService
    from .networks import NetworkService
    from .nodes import NodeJoiner, NodeManager
    from .os_template_service import OSTemplateService
    from .recipe_service import RecipeService
    from .registry import Registry
    from .routes import RouteTable
    from .settings import SettingsService
    from .storages import StorageService
    from .store import Store
    from .tasks import TaskManager
    from .vm_templates import VMTemplateService
    from .vms import VMService
    from .volumes import VolumeService


class PanelHost(Protocol):
    """The services of a running panel."""

    data_dir: Path
    default_storage_path: str | None  # "auto", a path, or None for no default storage
    store: Store  # for a plugin's own tables only (name them after the plugin)
    registry: Registry
    plugins: PluginCatalog
    routes: RouteTable  # every route, core and plugins (filled at start)
    events: EventLog
    audit: AuditLog
    settings: SettingsService
    tasks: TaskManager
    auth: Auth
    nodes: NodeManager
    joiner: NodeJoiner
    storages: StorageService
    volumes: VolumeService
    vm_templates: VMTemplateService
    networks: NetworkService
    ip_pools: IPPoolService
    os_templates: OSTemplateService
    recipes: RecipeService
    vms: VMService
    backup_targets: BackupTargetService
    backups: BackupService
    backup_taker: BackupTaker
    backup_restorer: BackupRestorer
    backup_schedules: ScheduleService
