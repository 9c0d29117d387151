"""API route registry: records metadata (for OpenAPI) and wraps handlers with the contract.

Every handler gets an ``ApiRequest`` (authenticated user, parsed and validated JSON body,
query) and returns a JSON-able object, or ``Reply(status, body)``. The wrapper turns
PanelErrors into ``{"error": {"code", "message"}}`` with the right status; nothing ever
answers with a traceback.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import bottle
import libvirt
import orjson

from ..errors import BadRequest, Forbidden, PanelError, Unauthorized, Unavailable
from ..validation import validate

if TYPE_CHECKING:
    from ..panel import Panel

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
SESSION_COOKIE = "hvp_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
ROLES = ("public", "user", "admin")


@dataclass
class Reply:
    """A response with a status other than 200."""

    status: int
    body: Any


@dataclass
class Stream:
    """A binary response streamed in chunks (volume downloads)."""

    chunks: Any
    content_type: str = "application/octet-stream"
    length: int | None = None
    filename: str | None = None


def created(obj: Any) -> Reply:
    return Reply(201, obj)


def accepted(task: dict[str, Any]) -> Reply:
    return Reply(202, {"task": task})


@dataclass
class ApiRequest:
    user: dict[str, Any] | None
    token: dict[str, Any] | None
    body: dict[str, Any]
    query: dict[str, str]
    raw: bottle.BaseRequest

    @property
    def is_admin(self) -> bool:
        return bool(self.user and self.user.get("role") == "admin")


@dataclass
class Route:
    method: str
    path: str
    handler: Callable[..., Any]
    summary: str
    role: str
    body: dict[str, Any] | None
    status: int
    tags: tuple[str, ...]
    query: dict[str, str] = field(default_factory=dict)
    raw_body: bool = False


class ApiRouter:
    """Collects API routes (core and plugins) before they are installed on the Bottle app."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(
        self,
        path: str,
        method: str = "GET",
        *,
        summary: str,
        role: str = "user",
        body: dict[str, Any] | None = None,
        status: int = 200,
        tags: tuple[str, ...] = (),
        query: dict[str, str] | None = None,
        raw_body: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register ``handler(req, **url_args)`` for ``method path`` (Bottle path syntax).

        ``raw_body=True`` leaves the request body unread (binary uploads: ``req.raw.body``).
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")

        def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
            self.routes.append(Route(method.upper(), path, handler, summary, role, body,
                                     status, tags, query or {}, raw_body))
            return handler

        return decorate

    def install(self, app: bottle.Bottle, panel: Panel) -> None:
        for route in self.routes:
            app.route(PREFIX + route.path, route.method, _wrap(route, panel))


def json_response(status: int, body: Any) -> str:
    bottle.response.status = status
    if status == 204:
        return ""
    bottle.response.content_type = "application/json"
    bottle.response.set_header("Cache-Control", "no-store")
    return orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS)


def error_response(exc: PanelError) -> str:
    return json_response(exc.status, exc.to_dict())


def authenticate(panel: Panel, request: bottle.BaseRequest) -> tuple[dict, dict]:
    """Bearer token, or session cookie (+ CSRF header for unsafe methods)."""
    header = request.get_header("Authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("use 'Authorization: Bearer TOKEN'", code="invalid_token")
        user, token = panel.auth.resolve(secret.strip())
        if token["kind"] not in ("api", "login"):
            raise Unauthorized("a session id is not an API token", code="invalid_token")
        return user, token
    session = request.get_cookie(SESSION_COOKIE)
    if not session:
        raise Unauthorized("authentication required", code="unauthorized")
    user, token = panel.auth.resolve(session)
    if token["kind"] != "session":
        raise Unauthorized("invalid session", code="invalid_token")
    if request.method not in SAFE_METHODS:
        sent = request.get_header(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, token["csrf"]):
            raise Forbidden("missing or wrong CSRF token", code="csrf_failed")
    return user, token


def _parse_body(request: bottle.BaseRequest) -> dict[str, Any]:
    raw = request.body.read()
    if not raw.strip():
        return {}
    ctype = request.content_type or ""
    if "json" not in ctype:
        raise BadRequest("send the body as application/json", code="unsupported_media_type")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return data


def _stream(result: Stream) -> Any:
    bottle.response.content_type = result.content_type
    if result.length is not None:
        bottle.response.set_header("Content-Length", str(result.length))
    if result.filename:
        bottle.response.set_header("Content-Disposition",
                                   f'attachment; filename="{result.filename}"')
    return result.chunks


def _wrap(route: Route, panel: Panel) -> Callable[..., str]:
    def handler(**url_args: Any) -> str:
        request = bottle.request
        try:
            user = token = None
            if route.role != "public":
                user, token = authenticate(panel, request)
                if route.role == "admin" and user["role"] != "admin":
                    raise Forbidden("this needs the admin role", code="admin_only")
            wants_body = request.method in ("POST", "PUT", "PATCH") and not route.raw_body
            body = _parse_body(request) if wants_body else {}
            if route.body is not None:
                validate(body, route.body, "request")
            req = ApiRequest(user, token, body, dict(request.query.decode()), request)
            result = route.handler(req, **url_args)
            if isinstance(result, Reply):
                return json_response(result.status, result.body)
            if isinstance(result, Stream):
                return _stream(result)
            return json_response(route.status, result)
        except PanelError as exc:
            return error_response(exc)
        except libvirt.libvirtError as exc:
            message = (exc.get_error_message() or str(exc)).strip()
            return error_response(Unavailable(f"libvirt: {message}", code="libvirt_error"))
        except Exception:
            log.exception("unhandled error in %s %s", route.method, route.path)
            return error_response(PanelError("internal error; see the panel log"))

    handler.__name__ = getattr(route.handler, "__name__", "handler")
    return handler
