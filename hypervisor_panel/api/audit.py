"""The audit log for admins: every state-changing call, newest first, filtered."""

from __future__ import annotations

from typing import Any

from ..audit import MAX_LIMIT, AuditQuery
from ..host import PanelHost
from ..routes import ApiRequest, Query, RouteTable
from . import schemas as s

TEXT = {"type": "string", "maxLength": 200}
ENTRY = s.obj(
    ["id", "time", "method", "route", "path", "action", "status", "ok"],
    id=s.ID, time=s.TIME, user_id=s.NULLABLE_STRING, user_name=s.NULLABLE_STRING,
    token_id=s.NULLABLE_STRING, token_kind=s.NULLABLE_STRING, address=s.NULLABLE_STRING,
    method={"type": "string"}, route={"type": "string"}, path={"type": "string"},
    params={"type": "object", "additionalProperties": {"type": "string"}},
    subject=s.NULLABLE_STRING, action={"type": "string"}, status={"type": "integer"},
    ok={"type": "boolean"}, error=s.NULLABLE_STRING, duration_ms={"type": "number"},
    summary={"type": "object", "description": "whitelisted names and ids of the body "
                                              "(never passwords, keys or tokens)"},
)
PAGE = s.obj(["items", "total"], items={"type": "array", "items": ENTRY},
             total={"type": "integer", "description": "entries matching the filters"})
FILTERS = (
    Query("actor", TEXT, "user name or id (a login attempt: the name it tried)"),
    Query("action", TEXT, "an action (POST /vms) or a method (DELETE)"),
    Query("method", {"enum": ["POST", "PUT", "PATCH", "DELETE"]}, "only this method"),
    Query("route", TEXT, "the exact route pattern (/vms/{vm_id})"),
    Query("path", TEXT, "the concrete path contains this"),
    Query("result", {"type": "string", "maxLength": 10},
          "ok, failed, a status (404) or a class (4xx)"),
    Query("since", {"type": "string", "maxLength": 40},
          "from this time: epoch seconds or ISO-8601 (UTC unless it says)"),
    Query("until", {"type": "string", "maxLength": 40}, "up to this time (same forms)"),
    Query("vm", {"type": "string", "maxLength": 64}, "the subject's id (a VM's, ...)"),
    Query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
          f"how many (default 100, at most {MAX_LIMIT})"),
    Query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
          "skip this many"),
    Query("before", {"type": "string", "maxLength": 64},
          "an entry id: only older entries (the next page after that entry)"),
)


def declare(api: RouteTable, panel: PanelHost) -> None:
    @api.route("/audit", summary="The audit log: state-changing calls, newest first",
               role="admin", tags=("audit",), response=PAGE, query=FILTERS)
    def list_audit(req: ApiRequest) -> dict[str, Any]:
        found, total = panel.audit.search(AuditQuery(**req.query))
        return {"items": found, "total": total}
