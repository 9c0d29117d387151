"""The OpenAPI 3.1 document, generated from the route table (plugin routes included).

It says what the web glue enforces: request bodies with their schema (``required`` when an
empty body is refused), typed query and path parameters, the success status with its
response schema, and the error statuses a route can answer, all in the one error shape.
Enums of back-end names (storage back ends, network modes, ...) are in the request schemas
the services build from the loaded plugins. Success answers carry OpenAPI ``links`` to
the operations their ids open (a created object, a listed one, a task), so a client or a
fuzzer can reach routes with path parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import __version__
from .auth_scope import ALWAYS
from .routes import PREFIX, Route, Schema
from .validation import validator_for

ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
                       "message": {"type": "string"},
                       "details": {}},
    }},
}
STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted (a task runs)", 204: "No content",
               400: "Bad request (malformed JSON or query)", 401: "Not authenticated",
               403: "Forbidden (role, CSRF or quota)", 404: "Not found",
               409: "Conflict with the current state", 413: "Body too large",
               422: "Invalid input", 429: "Too many attempts", 503: "A node or remote "
               "service is unavailable"}


BODY_METHODS = ("POST", "PUT", "PATCH")


def _body_required(schema: Schema) -> bool:
    """Whether an empty body is refused (the router validates a missing body as ``{}``)."""
    return not validator_for(schema).is_valid({})


def error_statuses(route: Route) -> list[int]:
    """Every error status ``route`` can answer."""
    statuses = {400, *route.errors}
    if route.role != "public":
        statuses.add(401)
    if route.role == "admin" or route.method not in ("GET", "HEAD") or (
            route.role == "user" and (route.method, route.path) not in ALWAYS):
        statuses.add(403)  # the role, the browser session's CSRF check or the token's scope
    if route.params:
        statuses.add(404)
    if route.body is not None or route.query:
        statuses.add(422)
    if route.method in BODY_METHODS:
        statuses.add(413)  # a body over the route's body_limit
    return sorted(statuses)


def _properties(schema: Schema | None) -> set[str]:
    """The property names an object of ``schema`` (or of any of its anyOf branches) has."""
    if not schema:
        return set()
    names = set(schema.get("properties", {}))
    for branch in schema.get("anyOf", []):
        names |= _properties(branch)
    return names


def _links(route: Route, routes: list[Route], op_ids: dict[int, str]) -> dict[str, Any]:
    """Links from ``route``'s success answer to the operations its ids open.

    A created or listed object opens ``{path}/{param}...`` (the param is its ``id``, or
    the field of the param's name: a volume's ``name``, a reservation's ``address``); an
    accepted task opens ``/tasks/{task_id}``. Path parameters of ``route`` pass through.
    """
    response = route.response or {}
    if route.status == 202:
        task = next((r for r in routes if r.method == "GET" and r.path == "/tasks/{task_id}"),
                    None)
        return {} if task is None else {op_ids[id(task)]: {
            "operationId": op_ids[id(task)], "parameters": {"task_id": "$response.body#/task/id"}}}
    if route.status == 201 and route.method == "POST":
        fields, pointer = _properties(response), "$response.body#/"
    elif route.method == "GET" and "items" in response.get("properties", {}):
        fields = _properties(response["properties"]["items"].get("items"))
        pointer = "$response.body#/items/0/"
    else:
        return {}
    links: dict[str, Any] = {}
    for other in routes:
        if not other.path.startswith(route.path + "/{") or other is route:
            continue
        new = [p for p in other.params if p not in route.params]
        if other.params[:len(route.params)] != route.params or len(new) != 1:
            continue
        field = new[0] if new[0] in fields else "id" if new[0].endswith("_id") else None
        if field is None or field not in fields:
            continue
        parameters = {p: f"$request.path.{p}" for p in route.params}
        parameters[new[0]] = pointer + field
        links[op_ids[id(other)]] = {"operationId": op_ids[id(other)], "parameters": parameters}
    return links


def _operation(route: Route, op_id: str, links: dict[str, Any]) -> dict[str, Any]:
    success: dict[str, Any] = {"description": STATUS_TEXT.get(route.status, "success")}
    if route.status != 204:
        schema = route.response or {}
        ctype = "application/octet-stream" if schema.get("format") == "binary" \
            else "application/json"
        success["content"] = {ctype: {"schema": schema}}
    if links:
        success["links"] = links
    responses: dict[str, Any] = {str(route.status): success}
    for status in error_statuses(route):
        responses[str(status)] = {"description": STATUS_TEXT.get(status, "error"),
                                  "content": {"application/json": {
                                      "schema": {"$ref": "#/components/schemas/Error"}}}}
    op: dict[str, Any] = {"summary": route.summary, "operationId": op_id,
                          "tags": list(route.tags), "responses": responses}
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}}
              for name in route.params]
    params += [{"name": q.name, "in": "query", "required": q.required,
                "description": q.description, "schema": q.schema} for q in route.query]
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": _body_required(route.body),
                             "content": {"application/json": {"schema": route.body}}}
    elif route.raw_body:
        op["requestBody"] = {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}
    if route.role == "public":
        op["security"] = []
    op["x-role"] = route.role
    if route.owner != "core":
        op["x-plugin"] = route.owner
    return op


def openapi_document(routes: Iterable[Route]) -> dict[str, Any]:
    """The whole document for ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    routes = list(routes)
    op_ids: dict[int, str] = {}  # id(route) -> its operationId
    for route in routes:
        base = f"{route.method.lower()}_{getattr(route.handler, '__name__', 'handler')}"
        op_id, n = base, 2
        while op_id in op_ids.values():
            op_id, n = f"{base}_{n}", n + 1
        op_ids[id(route)] = op_id
    for route in routes:
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = \
            _operation(route, op_ids[id(route)], _links(route, routes, op_ids))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Hypervisor panel API", "version": __version__},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "hvp_session"},
            },
            "schemas": {"Error": ERROR},
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
    }
