"""The composition root: builds every service with its dependencies and wires callbacks.

It holds no logic of its own. It is passed to every hook as ``panel`` (see ``host.py``
for what plugins may use of it). Services never import it: each gets the services it
needs, and lower services hear from higher ones through callbacks wired here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pluggy

from .api import core_routes
from .audit import AuditLog, AuditRecord, audit_event
from .auth import Auth
from .backups.panel_pending import apply_pending
from .backups.restoring import BackupRestorer
from .backups.schedules import ScheduleService
from .backups.service import BackupService
from .backups.taking import BackupTaker
from .backups.targets import BackupTargetService
from .catalog import PluginCatalog
from .events import EventLog, EventRecord
from .ip_pools import IPPoolService
from .networks import NetworkService
from .nodes import NodeJoiner, NodeManager
from .os_template_service import OSTemplateService
from .paths import protect_data_dir
from .plugins import call_each, get_plugin_manager
from .recipe_service import RecipeService
from .references import References
from .registry import Registry, collect_routes
from .routes import RouteTable
from .settings import SettingsService
from .storage import StorageBackend
from .storages import StorageService
from .store import Store
from .tasks import TaskManager
from .virt.domain_xml import DomainBuilder
from .vm_templates import VMTemplateService
from .vms import VMRecord, VMService
from .volumes import VolumeService

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    return Path(os.environ.get("HVP_DATA_DIR") or Path.home() / ".local/share/hypervisor-panel")


class Panel:
    """Everything a running panel is made of; ``start()`` brings it up, ``close()`` down.

    ``default_storage_path`` is handed to the ``default_storage`` hook: "auto" (the
    plugin's default), a path, or None for no storage at first start.
    """

    def __init__(self, data_dir: str | Path | None = None, *,
                 pm: pluggy.PluginManager | None = None, plugins: list[str] | None = None,
                 local_uri: str | None = None, workers: int = 4,
                 default_storage_path: str | None = "auto") -> None:
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        protect_data_dir(self.data_dir)  # never a storage or backup folder
        os.chmod(self.data_dir, 0o700)
        self.default_storage_path = default_storage_path
        apply_pending(self.data_dir)  # a panel restore asked for through the API
        self.store = Store(self.data_dir / "panel.db")
        self.pm = pm or get_plugin_manager(plugins)
        self.plugins = PluginCatalog(self.pm)
        self.references = References()
        self.events = EventLog(self.store, on_event=self._track)
        self.audit = AuditLog(self.store, on_entry=self._track_audit)
        self.settings = SettingsService(self.store)
        self.auth = Auth(self.store, self.references, self.events)
        self.tasks = TaskManager(self.store, workers=workers, on_finish=self._task_finished)
        self.registry = Registry.collect(self.pm, self)
        self.nodes = NodeManager(self.store, self.events, self.references, self.data_dir,
                                 local_uri)
        self.joiner = NodeJoiner(self.nodes, self.tasks, self.events, self.data_dir)
        self.storages = StorageService(self.store, self.nodes, self.events, self.references,
                                       self.registry.storage_backends)
        self.volumes = VolumeService(self.storages, self.nodes, self.tasks, self.references)
        self.vm_templates = VMTemplateService(self.store, self.references)
        self.networks = NetworkService(self.store, self.nodes, self.events, self.references,
                                       self.registry.network_modes)
        self.ip_pools = IPPoolService(self.store, self.events, self.references,
                                      self.networks.check_pool)
        self.vms = VMService(self.store, self.tasks, self.events, self.settings, self.nodes,
                             self.storages, self.vm_templates, self.auth, self.references,
                             self.networks, self.ip_pools, self.data_dir,
                             self._prepare_domain)
        self.os_templates = OSTemplateService(self.store, self.tasks, self.events,
                                              self.references, self.storages, self.nodes,
                                              self.registry.os_template_sources, self.data_dir)
        self.recipes = RecipeService(self.store, self.tasks, self.events, self.references,
                                     self.registry.recipe_sources)
        self.recipes.require_vm = self.vms.require
        self.vms.attach_services(self.os_templates, self.recipes)
        self.backup_targets = BackupTargetService(self.store, self.events, self.references,
                                                  self.registry.backup_targets, self.data_dir)
        self.backups = BackupService(self.store, self.tasks, self.events, self.references,
                                     self.backup_targets, self.vms, self.nodes, self.storages,
                                     self.data_dir)
        self.backup_taker = BackupTaker(self.backups)
        self.backup_restorer = BackupRestorer(self.backups)
        self.backup_schedules = ScheduleService(self.store, self.tasks, self.events,
                                                self.references)
        self.backup_schedules.run = self.backup_taker.run_schedule
        self.backup_schedules.check_target = self.backup_targets.require
        self.nodes.on_connected.append(self.storages.ensure_on_node)
        self.nodes.on_connected.append(self.networks.ensure_on_node)
        self.nodes.on_domain_event = self.vms.on_domain_event
        self.nodes.evacuate = self.vms.evacuate
        self.routes = RouteTable()
        self.started = False

    @property
    def storage_backends(self) -> dict[str, type[StorageBackend]]:
        return self.registry.storage_backends

    def start(self, admin_password: str | None = None) -> str | None:
        """Recover tasks, create first-start defaults, connect nodes, run startup hooks.

        Returns the generated admin password when one had to be made (print it once).
        """
        interrupted = self.tasks.recover()
        self.recipes.recover()
        if interrupted:
            log.warning("%d task(s) were interrupted by the last stop", interrupted)
        generated = self.auth.ensure_admin(admin_password or os.environ.get("HVP_ADMIN_PASSWORD"))
        self.events.trim()
        self.audit.trim()
        self.nodes.ensure_local_node()
        self.nodes.start()
        self.vm_templates.ensure_defaults()
        if self.storages.count() == 0:
            spec = self.pm.hook.default_storage(panel=self)
            if spec:
                try:
                    self.storages.create_default(spec)
                except Exception as exc:  # the panel still runs; the admin adds a storage
                    log.warning("could not create the default storage: %s", exc)
        self.backup_schedules.start()
        self.routes.extend(core_routes(self))
        self.routes.extend(collect_routes(self.pm, {"panel": self}))
        self.pm.hook.startup(panel=self)
        self.started = True
        return generated

    def close(self) -> None:
        if self.started:
            self.pm.hook.shutdown(panel=self)
        self.backup_schedules.stop()
        self.tasks.shutdown()  # before the connections the tasks use are closed
        self.nodes.close()
        self.store.close()

    # -- hooks wired into the services ------------------------------------------------------
    def _prepare_domain(self, vm: VMRecord, domain: DomainBuilder) -> None:
        self.pm.hook.prepare_domain(panel=self, vm=vm, domain=domain)

    def _track(self, event: EventRecord) -> None:
        call_each(self.pm.hook.track_event, panel=self, event=event)

    def _track_audit(self, entry: AuditRecord) -> None:
        call_each(self.pm.hook.track_event, panel=self, event=audit_event(entry))

    def _task_finished(self, task: dict) -> None:
        self.events.emit(f"task.{task['state']}", task["id"], actor=task.get("owner"),
                         kind_of=task["kind"], subject_of=task.get("subject"))
