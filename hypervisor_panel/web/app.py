"""``create_app(panel)``: the Bottle application (JSON API + browser UI)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import bottle

from ..errors import MethodNotAllowed, NotFound, PanelError
from ..routes import PREFIX
from .glue import error_response, install
from .ui import error_page, register_ui

if TYPE_CHECKING:
    from ..panel import Panel

bottle.BaseRequest.MEMFILE_MAX = 1024 * 1024


def create_app(panel: Panel) -> bottle.Bottle:
    """Build the WSGI app. Call after ``panel.start()``: plugin routes are known then."""
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False
    install(app, panel.routes, panel.auth)
    register_ui(app, panel)

    def on_error(err: bottle.HTTPError) -> str:
        # Every path under /api answers JSON errors (not only the versioned API).
        if bottle.request.path.startswith((PREFIX, "/api/")) or bottle.request.path == "/api":
            if err.status_code == 404:
                exc: PanelError = NotFound(f"no such endpoint: {bottle.request.path}",
                                           code="no_such_endpoint")
            elif err.status_code == 405:
                exc = MethodNotAllowed(f"{bottle.request.method} is not allowed here")
            else:
                exc = PanelError("internal error; see the panel log")
                exc.status = err.status_code
            return error_response(exc)
        bottle.response.content_type = "text/html; charset=utf-8"
        return error_page(err.status_code, bottle.request.path, bottle.request.method)

    app.default_error_handler = on_error

    @app.hook("after_request")
    def security_headers() -> None:
        bottle.response.set_header("X-Content-Type-Options", "nosniff")
        bottle.response.set_header("X-Frame-Options", "DENY")
        bottle.response.set_header("Referrer-Policy", "same-origin")

    return app
