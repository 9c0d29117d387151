"""Health, the OpenAPI document, plugins, settings, tasks and events."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..host import PanelHost
from ..openapi import openapi_document
from ..routes import ApiRequest, Query, RouteTable
from ..settings import PATCH_SCHEMA as SETTINGS_PATCH
from . import schemas as s

LIMIT = Query("limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
              "how many (default 100)")


def declare(api: RouteTable, panel: PanelHost) -> None:
    @api.route("/health", summary="Liveness and node summary", role="public",
               response=s.HEALTH, tags=("system",))
    def health(req: ApiRequest) -> dict[str, Any]:
        return {"status": "ok", "version": __version__,
                "nodes": {"total": len(panel.nodes.all()),
                          "online": len(panel.nodes.online_ids())}}

    @api.route("/openapi.json", summary="This API's OpenAPI 3.1 document", tags=("system",),
               response=s.OPENAPI)
    def openapi(req: ApiRequest) -> dict[str, Any]:
        return openapi_document(panel.routes)

    @api.route("/plugins", summary="Loaded plugins and the hooks they implement",
               tags=("plugins",), response=s.items(s.PLUGIN))
    def list_plugins(req: ApiRequest) -> dict[str, Any]:
        return {"items": panel.plugins.items()}

    @api.route("/plugins/{plugin_id}", summary="One loaded plugin", tags=("plugins",),
               response=s.PLUGIN)
    def get_plugin(req: ApiRequest, plugin_id: str) -> dict[str, Any]:
        return panel.plugins.get(plugin_id)

    @api.route("/settings", summary="Cluster settings", tags=("settings",),
               response=s.SETTINGS)
    def get_settings(req: ApiRequest) -> dict[str, Any]:
        return dict(panel.settings.get())

    @api.route("/settings", "PATCH", summary="Change cluster settings", role="admin",
               body=SETTINGS_PATCH, response=s.SETTINGS, tags=("settings",))
    def patch_settings(req: ApiRequest) -> dict[str, Any]:
        return dict(panel.settings.update(req.body))

    @api.route("/tasks", summary="Tasks (newest first); ?state= and ?subject= filter",
               tags=("tasks",), response=s.items(s.TASK), query=[
                   Query("state", {"enum": ["queued", "running", "succeeded", "failed",
                                            "cancelled"]}, "only tasks in this state"),
                   Query("subject", {"type": "string", "maxLength": 64},
                         "id of the object the task acts on (a VM id, ...)"), LIMIT])
    def list_tasks(req: ApiRequest) -> dict[str, Any]:
        return {"items": panel.tasks.visible(req.user, req.query.get("state"),
                                             req.query.get("subject"), req.query["limit"])}

    @api.route("/tasks/{task_id}", summary="One task: state, progress, log, error, result",
               tags=("tasks",), response=s.TASK)
    def get_task(req: ApiRequest, task_id: str) -> dict[str, Any]:
        return panel.tasks.get_for(task_id, req.user)

    @api.route("/tasks/{task_id}/actions/cancel", "POST", summary="Ask a task to stop",
               tags=("tasks",), response=s.TASK, errors=(409,),
               body=s.EMPTY_BODY)
    def cancel_task(req: ApiRequest, task_id: str) -> dict[str, Any]:
        return panel.tasks.cancel_for(task_id, req.user)

    @api.route("/events", summary="Recent events (newest first; users: their own)",
               tags=("events",), response=s.items(s.EVENT), query=[LIMIT])
    def list_events(req: ApiRequest) -> dict[str, Any]:
        actor = None if req.is_admin else req.user["id"]
        return {"items": panel.events.recent(actor, req.query["limit"])}
