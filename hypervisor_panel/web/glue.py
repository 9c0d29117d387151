"""Bottle glue: serves the framework-free route table (``routes.py``) over HTTP.

For every request it authenticates (bearer token, or session cookie + CSRF header for
unsafe methods), checks the role, parses and validates the JSON body and the query against
the route's declarations, calls the handler and renders its answer. Errors become
``{"error": {"code", "message"}}`` with their status; nothing ever answers a traceback.
Every state-changing call, failed or not, is then recorded in the audit log (``audit``).

Hostile input: a body over the route's ``body_limit`` is a 413 before it is read, JSON
nesting deeper than MAX_DEPTH a 400, a number out of range or not finite a 422 (see
``validation``). A stream that fails after its first bytes is logged with the reason and
cut (``StreamAborted``: the server closes the connection without completing the answer).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any

import bottle
import libvirt
import orjson

from ..audit import AuditCall
from ..auth_scope import check_scope, filter_result
from ..errors import BadRequest, Forbidden, PanelError, Unauthorized, Unavailable
from ..routes import (
    JSON_BODY_LIMIT,
    PATH_PARAM,
    PREFIX,
    ApiRequest,
    Reply,
    Route,
    Stream,
    parse_query,
)
from ..validation import depth, validate
from ..virt.errors import libvirt_message

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..auth import Auth

log = logging.getLogger(__name__)

SESSION_COOKIE = "hvp_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
BODY_METHODS = ("POST", "PUT", "PATCH")
MAX_DEPTH = 64  # levels of JSON objects and arrays in a body
TOO_LARGE = "hvp.body_too_large"  # environ key: the server did not read the body (its limit)
CSP = ("default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {  # on every answer: set by the app (app.py) and by the server itself
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_ANY: dict[str, Any] = {}


class BodyTooLarge(PanelError):
    status, code = 413, "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than this route accepts "
                         f"({limit} bytes)")


class StreamAborted(Exception):
    """A streamed answer failed after its first bytes: the connection is to be cut."""


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
    for name, value in getattr(exc, "headers", {}).items():  # Retry-After of a 429
        bottle.response.set_header(name, value)
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


def parse_body(request: bottle.BaseRequest, limit: int) -> dict[str, Any]:
    """The JSON object in the body ({} when empty), at most ``limit`` bytes and MAX_DEPTH
    levels deep. NaN, Infinity and 1e400 parse as floats that validation refuses (422)."""
    if (request.content_length or 0) > limit:
        raise BodyTooLarge(limit)
    raw = request.body.read(limit + 1)
    if len(raw) > limit:
        raise BodyTooLarge(limit)
    if not raw.strip():
        return {}
    if "json" not in (request.content_type or ""):
        raise BadRequest("send the body as application/json", code="unsupported_media_type")
    try:
        data = json.loads(raw, parse_constant=float)
        too_deep = depth(data) > MAX_DEPTH
    except RecursionError:
        too_deep = True  # deeper than the parser goes
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    if too_deep:
        raise BadRequest(f"the body nests objects and arrays more than {MAX_DEPTH} levels "
                         "deep", code="invalid_json")
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return data


def _stream(result: Stream) -> Iterable[bytes]:
    """The answer of a Stream. Its first bytes are read here, so a stream that fails at
    once is an ordinary JSON error; one that fails later is cut (see _guarded)."""
    chunks = iter(result.chunks)
    first = next((chunk for chunk in chunks if chunk), b"")
    bottle.response.content_type = result.content_type
    if result.length is not None:
        bottle.response.set_header("Content-Length", str(result.length))
    if result.filename:
        bottle.response.set_header("Content-Disposition",
                                   f'attachment; filename="{result.filename}"')
    request = bottle.request
    return _guarded(chain([first], chunks), f"{request.method} {request.path}", chunks)


def _guarded(chunks: Iterator[bytes], what: str, source: Any) -> Iterator[bytes]:
    """``chunks``; when they fail, log why and raise StreamAborted (the server cuts the
    connection: no traceback in the answer, no complete-looking truncated file)."""
    sent = 0
    try:
        for chunk in chunks:
            sent += len(chunk)
            yield chunk
    except Exception as exc:
        reason = exc.message if isinstance(exc, PanelError) else \
            f"libvirt: {libvirt_message(exc)}" if isinstance(exc, libvirt.libvirtError) \
            else f"{type(exc).__name__}: {exc}"
        log.error("%s: the stream failed after %d bytes, closing the connection: %s",
                  what, sent, reason, exc_info=not isinstance(exc, PanelError))
        raise StreamAborted(reason) from None
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _request(route: Route, auth: Auth, query_schema: dict[str, Any],
             stream: _CountingReader | None, seen: dict[str, Any]) -> ApiRequest:
    """Authenticate, check the role, parse and validate what the route declares.

    ``seen`` gets the user, token and body as soon as they are known (for the audit log,
    which records calls that fail later too)."""
    request = bottle.request
    user = token = None
    if route.role != "public":
        user, token = authenticate(auth, request)
        seen.update(user=user, token=token)
        if route.role == "admin" and user["role"] != "admin":
            raise Forbidden("this needs the admin role", code="admin_only")
    body: dict[str, Any] = {}
    if route.raw_body:
        if (request.content_length or 0) > route.body_limit:
            raise BodyTooLarge(route.body_limit)
    elif request.method in BODY_METHODS:
        body = parse_body(request, route.body_limit)
        seen["body"] = body
    if route.body is not None or body:
        validate(body, _ANY if route.body is None else route.body, "request")
    query = parse_query(route, request.query.decode())
    if route.query:
        validate(query, query_schema, "query")
    return ApiRequest(user, token, body, query, headers=dict(request.headers),
                      stream=stream,
                      content_length=request.content_length if route.raw_body else None,
                      remote_addr=request.environ.get("REMOTE_ADDR"))  # not X-Forwarded-For


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


def handler_for(route: Route, auth: Auth, audit: AuditLog | None = None
                ) -> Callable[..., Any]:
    """The Bottle callback serving ``route``; state-changing calls go to ``audit``."""
    query_schema = {"type": "object",
                    "properties": {q.name: q.schema for q in route.query}}
    audited = audit is not None and route.method not in SAFE_METHODS

    def handle(**url_args: Any) -> Any:
        # Raw bodies (uploads) are read straight from the server's input stream: bottle's
        # request.body would first copy them to a temporary file.
        stream = _CountingReader(bottle.request.environ.get("wsgi.input"),
                                 bottle.request.content_length) if route.raw_body else None
        started = time.monotonic()
        seen: dict[str, Any] = {}  # user, token, body: what the audit entry names
        failure: PanelError | None = None
        try:
            req = _request(route, auth, query_schema, stream, seen)
            result = _call_scoped(route, req, url_args)
            if isinstance(result, Reply):
                seen["created"] = _created_id(result)
                return json_response(result.status, result.body)
            if isinstance(result, Stream):
                return _stream(result)
            if req.user is None and isinstance(result, dict) and \
                    isinstance(result.get("user"), dict):
                seen["user"] = result["user"]  # a login: who signed in
            return json_response(route.status, result)
        except PanelError as exc:
            failure = exc
        except libvirt.libvirtError as exc:
            failure = Unavailable(f"libvirt: {libvirt_message(exc)}", code="libvirt_error")
        except Exception:
            log.exception("unhandled error in %s %s", route.method, route.path)
            failure = PanelError("internal error; see the panel log")
        finally:
            if audited and audit is not None:
                _audit(audit, route, url_args, seen, failure, started)
        assert failure is not None  # every path without one returned above
        _drain(stream)
        return error_response(failure)

    handle.__name__ = getattr(route.handler, "__name__", "handler")
    return handle


def _created_id(reply: Reply) -> str | None:
    """The id of what a 201 answer created (the audit entry's subject)."""
    body = reply.body
    if reply.status == 201 and isinstance(body, dict) and isinstance(body.get("id"), str):
        return body["id"]
    return None


def _audit(audit: AuditLog, route: Route, url_args: dict[str, Any], seen: dict[str, Any],
           failure: PanelError | None, started: float) -> None:
    """One thin call into the audit log; its failure is logged, never answered."""
    request = bottle.request
    try:
        audit.record(AuditCall(
            method=route.method, route=route.path, path=request.path,
            status=failure.status if failure else bottle.response.status_code,
            params=url_args, error=failure.code if failure else None,
            user=seen.get("user"), token=seen.get("token"),
            address=request.environ.get("REMOTE_ADDR"),  # not X-Forwarded-For
            duration_ms=(time.monotonic() - started) * 1000, body=seen.get("body"),
            subject=seen.get("created")))
    except Exception:
        log.exception("could not record %s %s in the audit log", route.method, request.path)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _call_scoped(route: Route, req: ApiRequest, url_args: dict[str, Any]) -> Any:
    """Call the handler within what the request's token may do (``auth_scope``); a path
    parameter with a control character (NUL...) names nothing and never reaches libvirt."""
    for name, value in url_args.items():
        if isinstance(value, str) and _CONTROL.search(value):
            raise BadRequest(f"{name} must not contain control characters", code="bad_path")
    check_scope(req.token, route.method, route.path, url_args)
    return filter_result(req.token, route.method, route.path, route.handler(req, **url_args))


HSTS = "max-age=31536000"


def _hsts() -> None:
    """Strict-Transport-Security on every answer served over HTTPS."""
    if bottle.request.environ.get("wsgi.url_scheme") == "https":
        bottle.response.set_header("Strict-Transport-Security", HSTS)


def _drain(stream: _CountingReader | None) -> None:
    # Needless when the server read the whole body before calling the app (waitress does).
    if stream is not None and not bottle.request.environ.get("wsgi.input_terminated"):
        stream.drain()


def _path_pattern(path: str) -> re.Pattern[str]:
    """``/vms/{vm_id}`` as a regular expression matching ``/api/v1/vms/x``."""
    parts = PATH_PARAM.split(path)  # text, name, text, name, ..., text
    return re.compile(re.escape(PREFIX) + "".join(
        re.escape(part) if i % 2 == 0 else "[^/]+" for i, part in enumerate(parts)) + "$")


def body_limits(routes: Iterable[Route]) -> Callable[[str, str], int]:
    """``limit(method, path)``: the largest body the server should read for a request,
    from the routes' ``body_limit`` (JSON_BODY_LIMIT where no route matches)."""
    special = [(route.method, _path_pattern(route.path), route.body_limit)
               for route in routes if route.body_limit != JSON_BODY_LIMIT]

    def limit(method: str, path: str) -> int:
        for route_method, pattern, size in special:
            if route_method == method and pattern.match(path):
                return size
        return JSON_BODY_LIMIT

    return limit


def install(app: bottle.Bottle, routes: Iterable[Route], auth: Auth,
            audit: AuditLog | None = None) -> None:
    """Serve every route of the table under ``/api/v1`` (and send HSTS over HTTPS);
    state-changing calls are recorded in ``audit``."""
    app.add_hook("after_request", _hsts)
    for route in routes:
        app.route(PREFIX + bottle_path(route.path), route.method,
                  handler_for(route, auth, audit))
