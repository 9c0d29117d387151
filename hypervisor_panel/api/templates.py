"""VM template routes."""

from __future__ import annotations

from typing import Any

from ..host import PanelHost
from ..routes import ApiRequest, RouteTable, created
from ..vm_templates import CREATE_SCHEMA, PATCH_SCHEMA
from . import schemas as s


def declare(api: RouteTable, panel: PanelHost) -> None:
    templates = panel.vm_templates

    @api.route("/vm-templates", summary="VM templates", tags=("vm-templates",),
               response=s.items(s.TEMPLATE))
    def list_templates(req: ApiRequest) -> dict[str, Any]:
        return {"items": templates.all()}

    @api.route("/vm-templates", "POST", summary="Create a VM template", role="admin",
               body=CREATE_SCHEMA, status=201, response=s.TEMPLATE, tags=("vm-templates",),
               errors=(409,))
    def create_template(req: ApiRequest):
        return created(templates.create(req.body))

    @api.route("/vm-templates/{template_id}", summary="One VM template",
               tags=("vm-templates",), response=s.TEMPLATE)
    def get_template(req: ApiRequest, template_id: str) -> dict[str, Any]:
        return templates.require(template_id)

    @api.route("/vm-templates/{template_id}", "PATCH", summary="Change a VM template",
               role="admin", body=PATCH_SCHEMA, response=s.TEMPLATE, tags=("vm-templates",),
               errors=(409,))
    def patch_template(req: ApiRequest, template_id: str) -> dict[str, Any]:
        return templates.update(template_id, req.body)

    @api.route("/vm-templates/{template_id}", "DELETE", summary="Delete an unused template",
               role="admin", tags=("vm-templates",), errors=(409,))
    def delete_template(req: ApiRequest, template_id: str) -> None:
        templates.delete(template_id)
