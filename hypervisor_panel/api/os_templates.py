"""OS template routes: templates (users see the ready ones), uploads, repositories (admin)."""

from __future__ import annotations

from typing import Any

from ..errors import NotFound
from ..host import PanelHost
from ..os_template_access import visible
from ..os_templates import IMPORT_SCHEMA, REFRESH_SCHEMA, UPLOAD_SCHEMA
from ..routes import ApiRequest, RouteTable, accepted, created
from . import schemas as s

HIDDEN_FROM_USERS = ("script", "error", "task", "repo", "entry", "origin", "progress")
TEXT = {"type": "string"}
INT = {"type": ["integer", "null"]}
STATE = {"enum": ["uploading", "receiving", "importing", "ready", "failed"]}
ERROR = {"anyOf": [{"type": "null"}, s.obj(["code", "message"], code=TEXT, message=TEXT)]}
_COMMON = dict(name=TEXT, os_family=TEXT, os_version=TEXT, arch=TEXT,
               tags={"type": "array", "items": TEXT}, min_disk_gib={"type": "integer"},
               min_memory_mib={"type": "integer"}, default_user=TEXT, config=TEXT,
               kind={"enum": ["image", "iso"]}, format={"enum": ["qcow2", "raw", "iso"]},
               compression=TEXT, sha256=s.NULLABLE_STRING, size=INT, description=TEXT)
TEMPLATE = s.obj(["id", "name", "state", "kind", "format"], id=s.ID, state=STATE,
                 owner=s.NULLABLE_STRING,
                 storage=s.ID, volume=s.NULLABLE_STRING, node=s.NULLABLE_STRING,
                 virtual_size=INT, origin={"enum": ["repo", "upload"]},
                 repo=s.NULLABLE_STRING, entry=s.NULLABLE_STRING, error=ERROR,
                 task=s.NULLABLE_STRING, progress={"type": "integer"}, **_COMMON)
ENTRY = s.obj(["id", "name", "repo", "entry", "file", "sha256", "size"], id=TEXT, repo=s.ID,
              repo_name=TEXT, entry=TEXT, file=TEXT, imported=s.NULLABLE_STRING,
              update_available={"type": "boolean"}, **_COMMON)
LISTING = s.obj(["items"], items={"type": "array", "items": TEMPLATE},
                available={"type": "array", "items": ENTRY})
REPO = s.obj(["id", "name", "source", "options", "templates"], id=s.ID, name=TEXT,
             source=TEXT, options={"type": "object"}, description=TEXT,
             templates={"type": "integer"}, created=s.TIME, refreshed=s.TIME, error=ERROR,
             entries={"type": "array", "items": {"type": "object"}})
SOURCE = s.obj(["id", "name", "options_schema"], id=s.ID, name=TEXT, description=TEXT,
               options_schema={"type": "object"})


def _view(req: ApiRequest, record: dict[str, Any]) -> dict[str, Any]:
    """Admins see everything; users see ready templates and their own uploads, without
    the internals."""
    if req.is_admin:
        return record
    if not visible(record, req.user):
        raise NotFound(f"OS template {record['id']!r} not found", code="os_template_not_found")
    return {k: v for k, v in record.items() if k not in HIDDEN_FROM_USERS}


def declare(api: RouteTable, panel: PanelHost) -> None:
    _declare_templates(api, panel)
    _declare_repos(api, panel)


def _declare_templates(api: RouteTable, panel: PanelHost) -> None:
    templates = panel.os_templates  # type: ignore[attr-defined]

    @api.route("/os-templates", summary="OS templates (admins: all, with the repositories' "
               "catalog; users: the ready ones)", tags=("os-templates",), response=LISTING)
    def list_templates(req: ApiRequest) -> dict[str, Any]:
        records = templates.all()
        if req.is_admin:
            return {"items": records, "available": templates.catalog(records)}
        return {"items": [_view(req, r) for r in records if visible(r, req.user)]}

    @api.route("/os-templates/{os_template_id}", summary="One OS template",
               tags=("os-templates",), response=TEMPLATE)
    def get_template(req: ApiRequest, os_template_id: str) -> dict[str, Any]:
        return _view(req, templates.require(os_template_id))

    @api.route("/os-templates", "POST", summary="Import a repository entry into a storage "
               "(202 + task: download, verify, unpack, check, upload)", role="admin",
               body=IMPORT_SCHEMA, status=202, response=s.ACCEPTED, tags=("os-templates",),
               errors=(404, 409))  # 404: no such repository, entry or storage
    def import_template(req: ApiRequest):
        return accepted(templates.import_from_repo(req.body, req.user))

    @api.route("/os-templates/uploads", "POST", summary="Start an upload: the template's "
               "metadata and storage; then PUT its file to /os-templates/{id}/content "
               "(users with the upload_isos permission: installer ISOs)", body=UPLOAD_SCHEMA,
               status=201, response=TEMPLATE,
               tags=("os-templates",), errors=(404, 409))  # 404: no such storage
    def create_upload(req: ApiRequest):
        return created(templates.create_upload(req.body, req.user))

    @api.route("/os-templates/{os_template_id}/content", "PUT", raw_body=True,
               summary="Upload the file of a template started with POST /os-templates/"
               "uploads (202 + import task)", status=202, response=s.ACCEPTED,
               tags=("os-templates",), errors=(409,))
    def upload_content(req: ApiRequest, os_template_id: str):
        return accepted(templates.receive_upload(os_template_id, req.stream, req.content_length,
                                                 req.user))

    @api.route("/os-templates/{os_template_id}", "DELETE", summary="Delete an OS template and "
               "its volume (refused while VMs use it; users: their own uploads)",
               tags=("os-templates",), errors=(409,))
    def delete_template(req: ApiRequest, os_template_id: str) -> None:
        templates.delete(os_template_id, req.user["id"], req.user)


def _declare_repos(api: RouteTable, panel: PanelHost) -> None:
    templates = panel.os_templates  # type: ignore[attr-defined]

    @api.route("/os-template-sources", summary="Registered OS template sources and their "
               "option schemas", role="admin", tags=("os-templates",),
               response=s.items(SOURCE))
    def list_sources(req: ApiRequest) -> dict[str, Any]:
        return {"items": [{"id": src.name, "name": src.name, "description": src.description,
                           "options_schema": src.options_schema}
                          for src in templates.sources.values()]}

    @api.route("/os-template-repos", summary="OS template repositories", role="admin",
               tags=("os-templates",), response=s.items(REPO))
    def list_repos(req: ApiRequest) -> dict[str, Any]:
        return {"items": templates.repos()}

    @api.route("/os-template-repos", "POST", summary="Add a repository (its index is read "
               "at once: a broken or unreachable one is refused)", role="admin",
               body=templates.repo_schema, status=201, response=REPO,
               tags=("os-templates",), errors=(409, 503))
    def add_repo(req: ApiRequest):
        return created(templates.add_repo(req.body, req.user["id"]))

    @api.route("/os-template-repos/{repo_id}", summary="One repository with its entries",
               role="admin", tags=("os-templates",), response=REPO)
    def get_repo(req: ApiRequest, repo_id: str) -> dict[str, Any]:
        return templates.public_repo(templates.require_repo(repo_id), entries=True)

    @api.route("/os-template-repos/{repo_id}/actions/refresh", "POST", role="admin",
               summary="Re-read the index (202 + task whose result says what changed; "
               "update: re-import changed templates no VM uses)", body=REFRESH_SCHEMA,
               status=202, response=s.ACCEPTED, tags=("os-templates",), errors=(409,))
    def refresh_repo(req: ApiRequest, repo_id: str):
        return accepted(templates.refresh_repo(repo_id, req.user,
                                               bool(req.body.get("update", False))))

    @api.route("/os-template-repos/{repo_id}", "DELETE", summary="Remove a repository "
               "(imported templates stay)", role="admin", tags=("os-templates",),
               errors=(409,))
    def remove_repo(req: ApiRequest, repo_id: str) -> None:
        templates.remove_repo(repo_id, req.user["id"])
