"""Bottle glue: serves the framework-free route table (``routes.py``) over HTTP.

For every request it authenticates (bearer token, or session cookie + CSRF header for
unsafe methods), checks the role, parses and validates the JSON body and the query against
the route's declarations, calls the handler and renders its answer. Errors become
``{"error": {"code", "message"}}`` with their status; nothing ever answers a traceback.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import bottle
import libvirt
import orjson

from ..errors import BadRequest, Forbidden, PanelError, Unauthorized, Unavailable
from ..routes import PATH_PARAM, PREFIX, ApiRequest, Reply, Route, Stream, parse_query
from ..validation import validate
from ..virt.errors import libvirt_message

if TYPE_CHECKING:
    from ..auth import Auth

log = logging.getLogger(__name__)

SESSION_COOKIE = "hvp_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
BODY_METHODS = ("POST", "PUT", "PATCH")


def bottle_path(path: str) -> str:
    """``/vms/{vm_id}`` in Bottle's syntax (``/vms/<vm_id>``)."""
    return PATH_PARAM.sub(r"<\1>", path)


def json_response(status: int, body: Any) -> str:
    bottle.response.status = status
    if status == 204:
        return ""
    bottle.response.content_type = "application/json"
    bottle.response.set_header("Cache-Control", "no-store")
    try:
        return orjson.dumps(body, default=str)
    except TypeError:  # a dict with non-string keys: the slower option handles it
        return orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS)


def error_response(exc: PanelError) -> str:
    return json_response(exc.status, exc.to_dict())


def authenticate(auth: Auth, request: bottle.BaseRequest) -> tuple[dict, dict]:
    """Bearer token, or session cookie (+ CSRF header for unsafe methods)."""
    header = request.get_header("Authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("use 'Authorization: Bearer TOKEN'", code="invalid_token")
        user, token = auth.resolve(secret.strip())
        if token["kind"] not in ("api", "login"):
            raise Unauthorized("a session id is not an API token", code="invalid_token")
        return user, token
    session = request.get_cookie(SESSION_COOKIE)
    if not session:
        raise Unauthorized("authentication required", code="unauthorized")
    user, token = auth.resolve(session)
    if token["kind"] != "session":
        raise Unauthorized("invalid session", code="invalid_token")
    if request.method not in SAFE_METHODS:
        sent = request.get_header(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, token["csrf"]):
            raise Forbidden("missing or wrong CSRF token", code="csrf_failed")
    return user, token


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_body(request: bottle.BaseRequest) -> dict[str, Any]:
    """The JSON object in the body ({} when empty); NaN and Infinity are refused."""
    raw = request.body.read()
    if not raw.strip():
        return {}
    if "json" not in (request.content_type or ""):
        raise BadRequest("send the body as application/json", code="unsupported_media_type")
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return data


def _stream(result: Stream) -> Iterable[bytes]:
    bottle.response.content_type = result.content_type
    if result.length is not None:
        bottle.response.set_header("Content-Length", str(result.length))
    if result.filename:
        bottle.response.set_header("Content-Disposition",
                                   f'attachment; filename="{result.filename}"')
    return result.chunks


def _request(route: Route, auth: Auth, query_schema: dict[str, Any],
             stream: _CountingReader | None) -> ApiRequest:
    """Authenticate, check the role, parse and validate what the route declares."""
    request = bottle.request
    user = token = None
    if route.role != "public":
        user, token = authenticate(auth, request)
        if route.role == "admin" and user["role"] != "admin":
            raise Forbidden("this needs the admin role", code="admin_only")
    body: dict[str, Any] = {}
    if request.method in BODY_METHODS and not route.raw_body:
        body = parse_body(request)
    if route.body is not None:
        validate(body, route.body, "request")
    query = parse_query(route, request.query.decode())
    if route.query:
        validate(query, query_schema, "query")
    return ApiRequest(user, token, body, query, headers=dict(request.headers),
                      stream=stream,
                      content_length=request.content_length if route.raw_body else None,
                      remote_addr=request.remote_addr)


DRAIN_LIMIT = 16 * 1024 * 1024  # unread upload bytes read and dropped before an error


class _CountingReader:
    """The request body of a raw-body route; counts what the handler read."""

    def __init__(self, raw: Any, length: int | None) -> None:
        self.raw, self.left = raw, length or 0

    def read(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.raw.read(size) if size else b""
        self.left -= len(data)
        return data

    def drain(self) -> None:
        """Read what the handler left (up to DRAIN_LIMIT), so the client, still sending,
        gets the answer instead of a broken connection."""
        if 0 < self.left <= DRAIN_LIMIT:
            while self.left and self.read(1 << 20):
                pass


def handler_for(route: Route, auth: Auth) -> Callable[..., Any]:
    """The Bottle callback serving ``route``."""
    query_schema = {"type": "object",
                    "properties": {q.name: q.schema for q in route.query}}

    def handle(**url_args: Any) -> Any:
        # Raw bodies (uploads) are read straight from the server's input stream: bottle's
        # request.body would first copy them to a temporary file.
        stream = _CountingReader(bottle.request.environ.get("wsgi.input"),
                                 bottle.request.content_length) if route.raw_body else None
        try:
            result = route.handler(_request(route, auth, query_schema, stream), **url_args)
            if isinstance(result, Reply):
                return json_response(result.status, result.body)
            if isinstance(result, Stream):
                return _stream(result)
            return json_response(route.status, result)
        except PanelError as exc:
            _drain(stream)
            return error_response(exc)
        except libvirt.libvirtError as exc:
            _drain(stream)
            return error_response(Unavailable(f"libvirt: {libvirt_message(exc)}",
                                              code="libvirt_error"))
        except Exception:
            _drain(stream)
            log.exception("unhandled error in %s %s", route.method, route.path)
            return error_response(PanelError("internal error; see the panel log"))

    handle.__name__ = getattr(route.handler, "__name__", "handler")
    return handle


def _drain(stream: _CountingReader | None) -> None:
    if stream is not None:
        stream.drain()


def install(app: bottle.Bottle, routes: Iterable[Route], auth: Auth) -> None:
    """Serve every route of the table under ``/api/v1``."""
    for route in routes:
        app.route(PREFIX + bottle_path(route.path), route.method, handler_for(route, auth))
