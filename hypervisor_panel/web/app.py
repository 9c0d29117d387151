"""``create_app(panel)``: the Bottle application (JSON API + browser UI)."""

from __future__ import annotations

import bottle

from ..errors import MethodNotAllowed, NotFound, PanelError
from .api import register_core_routes
from .router import PREFIX, error_response
from .ui import register_ui

bottle.BaseRequest.MEMFILE_MAX = 1024 * 1024


def create_app(panel) -> bottle.Bottle:
    """Build the WSGI app. Call after ``panel.start()`` so plugin routes are registered."""
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False
    register_core_routes(panel)
    panel.api.install(app, panel)
    register_ui(app, panel)

    def on_error(err: bottle.HTTPError) -> str:
        if bottle.request.path.startswith(PREFIX) or bottle.request.path == "/api":
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
        return f"<h1>{err.status_code}</h1><p>{bottle.html_escape(str(err.body))}</p>"

    app.default_error_handler = on_error

    @app.hook("after_request")
    def security_headers() -> None:
        bottle.response.set_header("X-Content-Type-Options", "nosniff")
        bottle.response.set_header("X-Frame-Options", "DENY")
        bottle.response.set_header("Referrer-Policy", "same-origin")

    return app
