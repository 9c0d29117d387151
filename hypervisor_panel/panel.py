"""The composition root: one Panel holds the store, plugins, services and node connections.

It is passed to every hook, so plugins reach the panel's services through it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pluggy

from .auth import Auth
from .cluster.join import NodeJoiner
from .cluster.migration import Migrator
from .errors import PluginLoadError
from .nodes import NodeManager
from .plugins import get_plugin_manager
from .storage import StorageBackend
from .storages import StorageService
from .store import Store
from .tasks import TaskManager
from .validation import check_schema
from .vm_templates import VMTemplateService
from .vms import VMService
from .web.router import ApiRouter

log = logging.getLogger(__name__)

EVENTS = "events"
MAX_EVENTS = 5000
DEFAULT_STORAGE_PATH = "/var/lib/libvirt/images/hvp"


def default_data_dir() -> Path:
    return Path(os.environ.get("HVP_DATA_DIR") or Path.home() / ".local/share/hypervisor-panel")


class Panel:
    """Everything a running panel is made of; ``start()`` brings it up, ``close()`` down."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        pm: pluggy.PluginManager | None = None,
        plugins: list[str] | None = None,
        local_uri: str | None = None,
        workers: int = 4,
        default_storage_path: str | None = DEFAULT_STORAGE_PATH,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self.store = Store(self.data_dir / "panel.db")
        self.pm = pm or get_plugin_manager(plugins)
        self.api = ApiRouter()
        self.auth = Auth(self.store)
        self.tasks = TaskManager(self.store, workers=workers, on_finish=self._task_finished)
        self.default_storage_path = default_storage_path
        self.storage_backends = self._collect_backends()
        self.storages = StorageService(self, self.storage_backends)
        self.vm_templates = VMTemplateService(self)
        self.vms = VMService(self)
        self.nodes = NodeManager(self, local_uri)
        self.joiner = NodeJoiner(self)
        self.migrator = Migrator(self)
        self._event_count = 0
        self.started = False

    def _collect_backends(self) -> dict[str, type[StorageBackend]]:
        backends: dict[str, type[StorageBackend]] = {}
        for batch in self.pm.hook.register_storage_backends(panel=self):
            for cls in batch:
                if cls.name in backends:
                    raise PluginLoadError(f"two plugins register storage back end {cls.name!r}")
                check_schema(cls.options_schema)
                backends[cls.name] = cls
        return backends

    def start(self, admin_password: str | None = None) -> str | None:
        """Recover tasks, create first-start defaults, connect nodes, run startup hooks.

        Returns the generated admin password when one had to be made (print it once).
        """
        interrupted = self.tasks.recover()
        if interrupted:
            log.warning("%d task(s) were interrupted by the last stop", interrupted)
        generated = self.auth.ensure_admin(admin_password or os.environ.get("HVP_ADMIN_PASSWORD"))
        self.nodes.ensure_local_node()
        self.nodes.start()
        self.vm_templates.ensure_defaults()
        if (self.default_storage_path and not self.store.count("storages")
                and "dir" in self.storage_backends):
            try:
                self.storages.create({"name": "default", "backend": "dir",
                                      "options": {"path": self.default_storage_path}})
            except Exception as exc:  # the panel still runs; the admin adds a storage
                log.warning("could not create the default storage: %s", exc)
        self.pm.hook.register_routes(panel=self)
        self.pm.hook.startup(panel=self)
        self.started = True
        return generated

    def close(self) -> None:
        if self.started:
            self.pm.hook.shutdown(panel=self)
        self.tasks.shutdown()  # before the connections the tasks use are closed
        self.nodes.close()
        self.store.close()

    def settings(self) -> dict[str, Any]:
        """Cluster-wide settings (``memory_overcommit``, ...)."""
        return self.store.get("settings", "cluster") or {}

    # -- events ------------------------------------------------------------------------
    def emit(self, kind: str, subject: str | None, actor: str | None = None, **data: Any):
        """Record an event and pass it to ``track_event`` hooks."""
        event = {"kind": kind, "subject": subject, "actor": actor, "time": time.time(),
                 "data": data}
        event = self.store.insert(EVENTS, event)
        self._event_count += 1
        if self._event_count % 500 == 0:
            self._trim_events()
        try:
            self.pm.hook.track_event(panel=self, event=event)
        except Exception:
            log.exception("a track_event hook failed")
        return event

    def _trim_events(self) -> None:
        events = sorted(self.store.all(EVENTS), key=lambda e: e["time"])
        for old in events[:-MAX_EVENTS]:
            self.store.delete(EVENTS, old["id"])

    def _task_finished(self, task: dict[str, Any]) -> None:
        self.emit(f"task.{task['state']}", task["id"], actor=task.get("owner"),
                  kind_of=task["kind"], subject_of=task.get("subject"))
