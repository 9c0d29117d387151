"""Recipe routes: recipes, recipe sources, the recipe settings and a VM's recipe runs.

The run-recipe VM action itself belongs to the VM routes (it needs the VM's SSH
endpoint); it calls ``RecipeService.choose`` and ``RecipeService.run`` with RUN_BODY.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..host import PanelHost
from ..recipe_format import ACCESS, MAX_SCRIPT_BYTES, NAME_RE
from ..routes import ApiRequest, Query, RouteTable, accepted, created
from ..validation import NAME, SAFE_INTEGER
from . import schemas as s

if TYPE_CHECKING:
    from ..recipe_service import RecipeService

TAGS = ("recipes",)
SCRIPT = {"type": "string", "minLength": 1, "maxLength": MAX_SCRIPT_BYTES,
          "description": "the recipe: a shell script with a metadata block"}
ACCESS_FIELD = {"enum": list(ACCESS), "description": "who may use it (all, admins, nobody); "
                "set here it overrides the script's 'access:' line and survives refreshes"}
CREATE = {"type": "object", "additionalProperties": False, "required": ["script"],
          "properties": {"script": SCRIPT, "access": ACCESS_FIELD}}
PATCH = {**CREATE, "required": [], "minProperties": 1}
SETTINGS_PATCH = {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "properties": {
        "users_may_add": {"type": "boolean", "description": "users may add their own recipes"},
        "default_recipe": {"type": ["string", "null"], "pattern": NAME_RE.pattern,
                           "description": "internal name of the recipe run on every new VM "
                                          "(the first compatible recipe of that name)"}}}
PARAMS = {"type": "object", "maxProperties": 64,
          "additionalProperties": {"type": ["string", "integer", "boolean"],
                                   "minimum": -SAFE_INTEGER, "maximum": SAFE_INTEGER},
          "description": "parameter values by name (environment variables of the script)"}
RUN_BODY = {"type": "object", "additionalProperties": False, "required": ["recipe"],
            "properties": {"recipe": {"type": "string", "pattern": NAME_RE.pattern,
                                      "description": "recipe id or internal name"},
                           "params": PARAMS}}

PARAM = {"type": "object", "required": ["name", "type", "required", "secret"], "properties": {
    "name": {"type": "string"}, "type": {"enum": ["string", "int", "bool", "enum"]},
    "required": {"type": "boolean"}, "secret": {"type": "boolean"},
    "default": {"type": "string", "description": "a secret's default shows masked"},
    "choices": {"type": "array", "items": {"type": "string"}}, "description": {"type": "string"}}}
RECIPE = s.obj(
    ["id", "name", "tags", "revision", "params", "timeout", "access", "origin", "usable"],
    id=s.ID, name={"type": "string"}, tags={"type": "array", "items": {"type": "string"}},
    revision={"type": "integer"}, description={"type": "string"},
    descriptions={"type": "object", "additionalProperties": {"type": "string"}},
    params={"type": "array", "items": PARAM}, timeout={"type": "integer"},
    access={"enum": list(ACCESS)}, owner=s.NULLABLE_STRING, usable={"type": "boolean"},
    script={"type": "string", "description": "shown to admins and to the recipe's owner"},
    sha256={"type": "string"}, created=s.TIME, updated=s.TIME,
    origin=s.obj(["kind"], kind={"enum": ["upload", "source"]}, source=s.NULLABLE_STRING,
                 path=s.NULLABLE_STRING))
SOURCE = s.obj(["id", "name", "source", "options", "recipes"], id=s.ID,
               name={"type": "string"}, source={"type": "string"},
               options={"type": "object"}, description={"type": "string"},
               recipes={"type": "integer"}, created=s.TIME,
               refreshed={"type": ["number", "null"]}, last_result={"type": "object"})
SOURCE_KIND = s.obj(["id", "name", "options_schema"], id=s.ID, name={"type": "string"},
                    description={"type": "string"}, options_schema={"type": "object"})
SETTINGS = s.obj(["users_may_add", "default_recipe"], users_may_add={"type": "boolean"},
                 default_recipe=s.NULLABLE_STRING)
RUN = s.obj(
    ["id", "vm", "recipe", "name", "revision", "params", "state", "exit_code", "log"],
    id=s.ID, vm=s.ID, recipe=s.ID, name={"type": "string"}, revision={"type": "integer"},
    params={"type": "object", "additionalProperties": {"type": "string"},
            "description": "the environment it got; secret values masked"},
    state={"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
    exit_code={"type": ["integer", "null"]}, user=s.NULLABLE_STRING,
    task=s.NULLABLE_STRING, log={"type": "array", "items": {"type": "string"}},
    error={"anyOf": [{"type": "null"}, s.obj(["code", "message"], code={"type": "string"},
                                             message={"type": "string"})]},
    created=s.TIME, started={"type": ["number", "null"]}, finished={"type": ["number", "null"]})


def source_body(kinds: list[str]) -> dict[str, Any]:
    """The body of POST /recipe-sources: ``options`` is checked against the kind's schema."""
    return {"type": "object", "additionalProperties": False, "required": ["name", "source"],
            "properties": {"name": NAME, "source": {"enum": kinds},
                           "options": {"type": "object"},
                           "description": {"type": "string", "maxLength": 500}}}


def declare(api: RouteTable, panel: PanelHost) -> None:
    recipes: RecipeService = panel.recipes  # type: ignore[attr-defined]
    _declare_recipes(api, recipes)
    _declare_sources(api, recipes)

    @api.route("/recipe-settings", summary="Whether users may add recipes; the default "
               "recipe", tags=TAGS, response=SETTINGS)
    def get_settings(req: ApiRequest) -> dict[str, Any]:
        return recipes.settings()

    @api.route("/recipe-settings", "PATCH", summary="Change the recipe settings",
               role="admin", body=SETTINGS_PATCH, response=SETTINGS, tags=TAGS)
    def patch_settings(req: ApiRequest) -> dict[str, Any]:
        return recipes.update_settings(req.body)

    @api.route("/vms/{vm_id}/recipe-runs", summary="The recipe runs of a VM with their logs "
               "(newest first; secrets masked)", tags=TAGS, response=s.items(RUN),
               query=[Query("limit", {"type": "integer", "minimum": 1, "maximum": 50,
                                      "default": 20}, "how many runs")])
    def list_runs(req: ApiRequest, vm_id: str) -> dict[str, Any]:
        return {"items": recipes.runs(vm_id, req.user, req.query["limit"])}


def _declare_recipes(api: RouteTable, recipes: RecipeService) -> None:
    @api.route("/recipes", summary="Recipes you may use (admins: all)", tags=TAGS,
               response=s.items(RECIPE),
               query=[Query("tags", {"type": "string", "maxLength": 1000},
                            "only recipes sharing a tag with these (comma-separated)")])
    def list_recipes(req: ApiRequest) -> dict[str, Any]:
        tags = [t for t in (req.query.get("tags") or "").split(",") if t.strip()]
        return {"items": recipes.listing(req.user, tags or None)}

    @api.route("/recipes", "POST", summary="Add a recipe (admins; users when the settings "
               "allow it)", body=CREATE, status=201, response=RECIPE, tags=TAGS,
               errors=(409,))
    def add_recipe(req: ApiRequest):
        return created(recipes.add(req.body, req.user))

    @api.route("/recipes/{recipe_id}", summary="One recipe (its script for admins and its "
               "owner)", tags=TAGS, response=RECIPE)
    def get_recipe(req: ApiRequest, recipe_id: str) -> dict[str, Any]:
        return recipes.view(recipe_id, req.user)

    @api.route("/recipes/{recipe_id}", "PATCH", summary="Change a recipe's script or access",
               body=PATCH, response=RECIPE, tags=TAGS, errors=(409,))
    def patch_recipe(req: ApiRequest, recipe_id: str) -> dict[str, Any]:
        return recipes.edit(recipe_id, req.body, req.user)

    @api.route("/recipes/{recipe_id}", "DELETE", summary="Delete an uploaded recipe",
               tags=TAGS, errors=(409,))
    def delete_recipe(req: ApiRequest, recipe_id: str) -> None:
        recipes.delete(recipe_id, req.user)


def _declare_sources(api: RouteTable, recipes: RecipeService) -> None:
    @api.route("/recipe-source-kinds", summary="Registered recipe source kinds and their "
               "option schemas", role="admin", tags=TAGS, response=s.items(SOURCE_KIND))
    def list_kinds(req: ApiRequest) -> dict[str, Any]:
        return {"items": recipes.source_kinds()}

    @api.route("/recipe-sources", summary="Recipe sources (folders, repository URLs)",
               role="admin", tags=TAGS, response=s.items(SOURCE))
    def list_sources(req: ApiRequest) -> dict[str, Any]:
        return {"items": recipes.source_listing()}

    @api.route("/recipe-sources", "POST", summary="Add a recipe source and read its recipes "
               "(202 + task; nothing is added when reading fails)", role="admin",
               body=source_body(sorted(recipes.sources)), status=202, response=s.ACCEPTED,
               tags=TAGS, errors=(409,))
    def add_source(req: ApiRequest):
        return accepted(recipes.add_source(req.body, req.user))

    @api.route("/recipe-sources/{source_id}", summary="One recipe source", role="admin",
               tags=TAGS, response=SOURCE)
    def get_source(req: ApiRequest, source_id: str) -> dict[str, Any]:
        return recipes.source_view(source_id)

    @api.route("/recipe-sources/{source_id}/actions/refresh", "POST", role="admin",
               summary="Re-read a source: add, update and remove its recipes (202 + task)",
               body=s.EMPTY_BODY, status=202, response=s.ACCEPTED, tags=TAGS, errors=(409,))
    def refresh_source(req: ApiRequest, source_id: str):
        return accepted(recipes.refresh_source(source_id, req.user))

    @api.route("/recipe-sources/{source_id}", "DELETE", summary="Remove a source and its "
               "recipes", role="admin", tags=TAGS, errors=(409,))
    def delete_source(req: ApiRequest, source_id: str) -> None:
        recipes.remove_source(source_id, req.user)
