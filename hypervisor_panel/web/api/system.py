"""Health, OpenAPI, plugins, tasks and events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ... import __version__
from ...errors import NotFound
from ...plugins import plugin_info
from ..openapi import openapi_document
from ..router import ApiRequest

if TYPE_CHECKING:
    from ...panel import Panel


def register(panel: Panel) -> None:
    api = panel.api

    @api.route("/health", summary="Liveness and node summary", role="public", tags=("system",))
    def health(req: ApiRequest) -> dict[str, Any]:
        total = panel.store.count("nodes")
        return {"status": "ok", "version": __version__,
                "nodes": {"total": total, "online": len(panel.nodes.online_ids())}}

    @api.route("/openapi.json", summary="This API's OpenAPI 3.1 document", tags=("system",))
    def openapi(req: ApiRequest) -> dict[str, Any]:
        return openapi_document(panel.api.routes)

    @api.route("/plugins", summary="Loaded plugins and the hooks they implement",
               tags=("plugins",))
    def plugins(req: ApiRequest) -> dict[str, Any]:
        return {"items": plugin_info(panel.pm)}

    @api.route("/plugins/<plugin_id>", summary="One loaded plugin", tags=("plugins",))
    def plugin(req: ApiRequest, plugin_id: str) -> dict[str, Any]:
        for item in plugin_info(panel.pm):
            if item["id"] == plugin_id:
                return item
        raise NotFound(f"plugin {plugin_id!r} not loaded", code="plugin_not_found")

    @api.route("/storage-backends", summary="Registered storage back ends and option schemas",
               tags=("storages",))
    def backends(req: ApiRequest) -> dict[str, Any]:
        return {"items": [
            {"id": cls.name, "name": cls.name, "description": cls.description,
             "shared": cls.shared, "options_schema": cls.options_schema}
            for cls in panel.storage_backends.values()
        ]}

    def visible_task(req: ApiRequest, task: dict[str, Any]) -> bool:
        return req.is_admin or task.get("owner") == req.user["id"]

    @api.route("/tasks", summary="Tasks (newest first); ?state= and ?subject= filter",
               tags=("tasks",),
               query={"state": "queued|running|succeeded|failed|cancelled",
                      "subject": "id of the object the task acts on (a VM id, ...)",
                      "limit": "how many (default 100)"})
    def tasks(req: ApiRequest) -> dict[str, Any]:
        state, subject = req.query.get("state"), req.query.get("subject")
        items = [t for t in panel.store.all("tasks")
                 if visible_task(req, t) and (not state or t["state"] == state)
                 and (not subject or t.get("subject") == subject)]
        items.sort(key=lambda t: t["created"], reverse=True)
        limit = _limit(req.query.get("limit"))
        return {"items": items[:limit]}

    @api.route("/tasks/<task_id>", summary="One task: state, progress, log, error, result",
               tags=("tasks",))
    def task(req: ApiRequest, task_id: str) -> dict[str, Any]:
        task = panel.store.get("tasks", task_id)
        if task is None or not visible_task(req, task):
            raise NotFound(f"task {task_id!r} not found", code="task_not_found")
        return task

    @api.route("/tasks/<task_id>/actions/cancel", "POST", summary="Ask a task to stop",
               tags=("tasks",))
    def cancel(req: ApiRequest, task_id: str) -> dict[str, Any]:
        found = task(req, task_id)
        panel.tasks.cancel(found["id"])
        return panel.tasks.get(task_id)

    @api.route("/events", summary="Recent events (newest first)", tags=("events",),
               query={"limit": "how many (default 100)"})
    def events(req: ApiRequest) -> dict[str, Any]:
        items = panel.store.all("events")
        if not req.is_admin:
            items = [e for e in items if e.get("actor") == req.user["id"]]
        items.sort(key=lambda e: e["time"], reverse=True)
        return {"items": items[:_limit(req.query.get("limit"))]}


def _limit(value: str | None, default: int = 100) -> int:
    try:
        return max(1, min(10000, int(value))) if value else default
    except ValueError:
        return default
