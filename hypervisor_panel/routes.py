"""The framework-free route table: what the API offers, independent of the web server.

A route declares its method, path (OpenAPI syntax: ``/vms/{vm_id}``), role, request body
schema, query parameters, response schema and success status once. The web glue
(``web/``) authenticates, parses and validates the body and the query against these
declarations before calling the handler, and the OpenAPI document is generated from them,
so what is declared is what is enforced. Handlers get an :class:`ApiRequest` and return a
JSON-able object, a :class:`Reply` (another status) or a :class:`Stream` (bytes).

A request body may be at most :data:`JSON_BODY_LIMIT` bytes, or :data:`UPLOAD_LIMIT` for a
raw-body route (an upload); ``max_body`` overrides either for one route. Integers and
numbers of the declared schemas get the bounds validation enforces where they give none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, Literal

from .validation import with_bounds

PREFIX = "/api/v1"
Role = Literal["public", "user", "admin"]
ROLES: tuple[Role, ...] = ("public", "user", "admin")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PATH_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
Schema = dict[str, Any]
Handler = Callable[..., Any]
JSON_BODY_LIMIT = 1024 * 1024  # bytes of a JSON body (the largest field is a 512 KiB script)
UPLOAD_LIMIT = 64 * 1024**4  # bytes of a raw body: an image as large as the largest disk


@dataclass(frozen=True)
class Query:
    """One query parameter: its JSON Schema (string, integer or boolean) and meaning."""

    name: str
    schema: Schema
    description: str = ""
    required: bool = False


@dataclass
class ApiRequest:
    """What a handler sees of an HTTP request: who asks, the validated body and query."""

    user: dict[str, Any] | None
    token: dict[str, Any] | None
    body: dict[str, Any] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: BinaryIO | None = None  # the raw body of routes declared raw_body=True
    content_length: int | None = None
    remote_addr: str | None = None

    @property
    def is_admin(self) -> bool:
        return bool(self.user and self.user.get("role") == "admin")


@dataclass
class Reply:
    """A JSON response with a status other than the route's default."""

    status: int
    body: Any = None


@dataclass
class Stream:
    """A binary response sent in chunks (volume downloads, backups)."""

    chunks: Iterable[bytes]
    content_type: str = "application/octet-stream"
    length: int | None = None
    filename: str | None = None


def created(obj: Any) -> Reply:
    return Reply(201, obj)


def accepted(task: dict[str, Any]) -> Reply:
    return Reply(202, {"task": task})


@dataclass(frozen=True)
class Route:
    """One declared operation (see the module docstring)."""

    method: str
    path: str
    handler: Handler
    summary: str
    role: Role = "user"
    body: Schema | None = None
    response: Schema | None = None
    status: int = 200
    tags: tuple[str, ...] = ()
    query: tuple[Query, ...] = ()
    raw_body: bool = False
    errors: tuple[int, ...] = ()  # error statuses beyond the ones every route may answer
    owner: str = "core"  # the plugin that declared it
    max_body: int | None = None  # bytes; None: UPLOAD_LIMIT if raw_body else JSON_BODY_LIMIT

    @property
    def body_limit(self) -> int:
        """The largest body this route accepts, in bytes (larger ones get a 413)."""
        if self.max_body is not None:
            return self.max_body
        return UPLOAD_LIMIT if self.raw_body else JSON_BODY_LIMIT

    @property
    def params(self) -> list[str]:
        return PATH_PARAM.findall(self.path)

    @property
    def key(self) -> tuple[str, str]:
        """(method, path with parameter names blanked): two routes may not share one."""
        return self.method, PATH_PARAM.sub("{}", self.path)


class RouteTable:
    """Collects routes; ``@table.route(...)`` declares one, duplicates are refused."""

    def __init__(self, owner: str = "core") -> None:
        self.owner = owner
        self._routes: list[Route] = []

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def route(self, path: str, method: str = "GET", *, summary: str, role: Role = "user",
              body: Schema | None = None, response: Schema | None = None,
              status: int | None = None, tags: tuple[str, ...] = (),
              query: Iterable[Query] = (), raw_body: bool = False,
              errors: tuple[int, ...] = (), max_body: int | None = None,
              ) -> Callable[[Handler], Handler]:
        """Declare ``handler(req, **path_params)`` for ``method path``."""
        method = method.upper()
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if method not in METHODS:
            raise ValueError(f"unsupported method {method}")
        if status is None:
            status = 204 if method == "DELETE" and response is None else 200

        def declare(handler: Handler) -> Handler:
            self.add(Route(method, path, handler, summary, role, body, response, status,
                           tags, tuple(query), raw_body, errors, self.owner, max_body))
            return handler

        return declare

    def add(self, route: Route) -> None:
        """Add ``route`` (its schemas get the default number bounds); duplicates refused."""
        if route.max_body is not None and route.max_body < 0:
            raise ValueError(f"{route.method} {route.path}: max_body must be >= 0")
        route = replace(route, body=with_bounds(route.body), query=tuple(
            replace(q, schema=with_bounds(q.schema) or q.schema) for q in route.query))
        for other in self._routes:
            if other.key == route.key:
                raise ValueError(f"{route.method} {route.path} is declared twice "
                                 f"(by {other.owner} and {route.owner})")
        self._routes.append(route)

    def extend(self, routes: Iterable[Route]) -> None:
        for route in routes:
            self.add(route)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_query(route: Route, raw: Mapping[str, str]) -> dict[str, Any]:
    """Turn the query string's text into the declared types; unknown names are ignored.

    An empty value means "not given" (``?keep_disks=`` is the default), so a form or a
    fuzzer sending blank fields gets the default rather than an error.
    """
    from .errors import BadRequest

    out: dict[str, Any] = {}
    for param in route.query:
        text = (raw.get(param.name) or "").strip()
        kind = param.schema.get("type", "string")
        if not text:
            if param.required:
                raise BadRequest(f"give ?{param.name}=", code="bad_query")
            if "default" in param.schema:
                out[param.name] = param.schema["default"]
            continue
        if kind == "boolean":
            if text.lower() not in _TRUE + _FALSE:
                raise BadRequest(f"?{param.name} must be true or false", code="bad_query")
            out[param.name] = text.lower() in _TRUE
        elif kind == "integer":
            try:
                out[param.name] = int(text)
            except ValueError:
                raise BadRequest(f"?{param.name} must be an integer",
                                 code="bad_query") from None
        else:
            out[param.name] = text
    return out
