"""``create_app(panel)``: the Bottle application (JSON API + browser UI).

Every answer, whatever produced it (a route, a static file, a redirect, an error page,
Bottle's own last-resort error), leaves through :meth:`PanelApp.wsgi`, which sets the
security headers (``glue.SECURITY_HEADERS``: a Content-Security-Policy without inline
script, no framing, nosniff, no referrer). The server asks ``app.body_limit(method, path)``
how much body to read, and a request whose body it refused gets the 413 here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import bottle
import orjson

from ..errors import MethodNotAllowed, NotFound, PanelError
from ..routes import JSON_BODY_LIMIT, PREFIX
from .glue import (
    CSP,
    SECURITY_HEADERS,
    TOO_LARGE,
    BodyTooLarge,
    body_limits,
    error_response,
    install,
)
from .ui import error_page, register_ui

if TYPE_CHECKING:
    from ..panel import Panel

bottle.BaseRequest.MEMFILE_MAX = 1024 * 1024
_SECURITY_NAMES = {name.lower() for name in SECURITY_HEADERS}


class PanelApp(bottle.Bottle):
    """Bottle, with the security headers on every answer and the 413 of refused bodies."""

    body_limit: Callable[[str, str], int] = staticmethod(lambda method, path: JSON_BODY_LIMIT)
    security_headers: dict[str, str] = SECURITY_HEADERS

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]
             ) -> Iterable[bytes]:
        def secured(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            headers = [(k, v) for k, v in headers if k.lower() not in _SECURITY_NAMES]
            headers.extend(self.security_headers.items())
            return start_response(status, headers, exc_info)

        limit = environ.get(TOO_LARGE)
        if limit is not None:  # the server did not read the body: nothing to route
            body = orjson.dumps(BodyTooLarge(limit).to_dict())
            secured("413 Payload Too Large", [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store")])
            return [body]
        return super().wsgi(environ, secured)


def create_app(panel: Panel, *, eval_scripts: bool = False) -> PanelApp:
    """Build the WSGI app. Call after ``panel.start()``: plugin routes are known then.

    ``eval_scripts`` adds ``'unsafe-eval'`` to the policy's script-src, for the desktop
    window only: pywebview runs ``evaluate_js`` through ``eval()`` (inline script stays
    refused)."""
    app = PanelApp(catchall=True)
    app.config["json.enable"] = False
    if eval_scripts:
        app.security_headers = {**SECURITY_HEADERS, "Content-Security-Policy": CSP.replace(
            "script-src 'self'", "script-src 'self' 'unsafe-eval'")}
    app.body_limit = body_limits(panel.routes)  # type: ignore[method-assign]
    install(app, panel.routes, panel.auth, panel.audit)
    register_ui(app, panel)

    def on_error(err: bottle.HTTPError) -> str:
        # Every path under /api answers JSON errors (not only the versioned API).
        if bottle.request.path.startswith((PREFIX, "/api/")) or bottle.request.path == "/api":
            if err.status_code == 404:
                exc: PanelError = NotFound(f"no such endpoint: {bottle.request.path}",
                                           code="no_such_endpoint")
            elif err.status_code == 405:
                exc = MethodNotAllowed(f"{bottle.request.method} is not allowed here")
            elif err.status_code == 413:
                exc = BodyTooLarge(JSON_BODY_LIMIT)
            else:
                exc = PanelError("internal error; see the panel log")
                exc.status = err.status_code
            return error_response(exc)
        bottle.response.content_type = "text/html; charset=utf-8"
        return error_page(err.status_code, bottle.request.path, bottle.request.method)

    app.default_error_handler = on_error
    return app
