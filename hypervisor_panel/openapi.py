"""The OpenAPI 3.1 document, generated from the route table (plugin routes included).

It says what the web glue enforces: request bodies with their schema (``required`` when an
empty body is refused), typed query and path parameters, the success status with its
response schema, and the error statuses a route can answer, all in the one error shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import __version__
from .routes import PREFIX, Route, Schema

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


def _body_required(schema: Schema) -> bool:
    """Whether an empty body is refused (the router treats a missing body as ``{}``)."""
    return bool(schema.get("required")) or schema.get("minProperties", 0) > 0


def error_statuses(route: Route) -> list[int]:
    """Every error status ``route`` can answer."""
    statuses = {400, *route.errors}
    if route.role != "public":
        statuses.add(401)
    if route.role == "admin" or route.method not in ("GET", "HEAD"):
        statuses.add(403)  # the role, or the browser session's CSRF check
    if route.params:
        statuses.add(404)
    if route.body is not None or route.query:
        statuses.add(422)
    return sorted(statuses)


def _operation(route: Route, op_id: str) -> dict[str, Any]:
    success: dict[str, Any] = {"description": STATUS_TEXT.get(route.status, "success")}
    if route.status != 204:
        schema = route.response or {}
        ctype = "application/octet-stream" if schema.get("format") == "binary" \
            else "application/json"
        success["content"] = {ctype: {"schema": schema}}
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
    seen: set[str] = set()
    for route in routes:
        base = f"{route.method.lower()}_{getattr(route.handler, '__name__', 'handler')}"
        op_id, n = base, 2
        while op_id in seen:
            op_id, n = f"{base}_{n}", n + 1
        seen.add(op_id)
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = \
            _operation(route, op_id)
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
