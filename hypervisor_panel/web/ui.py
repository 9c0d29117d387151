"""The browser UI: server-rendered page shells whose scripts call the JSON API.

Login sets an HttpOnly, SameSite=Strict session cookie; every page carries the session's
CSRF token in ``<meta name="csrf-token">`` and the scripts send it as ``X-CSRF-Token``.
No JavaScript build step: plain ES modules in ``static/``.
"""

from __future__ import annotations

import hmac
from importlib import resources
from typing import TYPE_CHECKING, Any

import bottle

from .. import __version__
from ..errors import PanelError
from .router import SESSION_COOKIE

if TYPE_CHECKING:
    from ..panel import Panel

SESSION_TTL = 12 * 3600
WEB_DIR = resources.files("hypervisor_panel") / "web"
TEMPLATE_DIR = str(WEB_DIR / "templates")
STATIC_DIR = str(WEB_DIR / "static")
PAGES = {
    "/": ("dashboard", "Dashboard"),
    "/vms": ("vms", "Virtual machines"),
    "/vms/<vm_id>": ("vm", "Virtual machine"),
    "/storages": ("storages", "Storages"),
    "/vm-templates": ("vm_templates", "VM templates"),
    "/nodes": ("nodes", "Nodes"),
    "/tasks": ("tasks", "Tasks"),
}


def render(name: str, **context: Any) -> str:
    return bottle.template(name, template_lookup=[TEMPLATE_DIR], version=__version__, **context)


def register_ui(app: bottle.Bottle, panel: Panel) -> None:
    def session() -> tuple[dict, dict] | None:
        secret = bottle.request.get_cookie(SESSION_COOKIE)
        if not secret:
            return None
        try:
            user, token = panel.auth.resolve(secret)
        except PanelError:
            return None
        return (user, token) if token["kind"] == "session" else None

    @app.get("/static/<path:path>")
    def static(path: str):
        response = bottle.static_file(path, root=STATIC_DIR)
        response.set_header("Cache-Control", "no-cache")
        return response

    @app.get("/login")
    def login_page() -> str:
        if session():
            return bottle.redirect("/")
        return render("login", error=None, username="")

    @app.post("/login")
    def login() -> str:
        username = bottle.request.forms.getunicode("username", "") or ""
        password = bottle.request.forms.getunicode("password", "") or ""
        try:
            user = panel.auth.login(username, password)
        except PanelError as exc:
            bottle.response.status = 401
            return render("login", error=exc.message, username=username)
        secret, _ = panel.auth.issue(user, "session", ttl=SESSION_TTL)
        bottle.response.set_cookie(
            SESSION_COOKIE, secret, path="/", httponly=True, samesite="strict",
            max_age=SESSION_TTL, secure=bottle.request.urlparts.scheme == "https",
        )
        panel.emit("auth.login", user["id"], actor=user["id"], via="browser")
        return bottle.redirect("/")

    @app.post("/logout")
    def logout() -> str:
        found = session()
        if found:
            sent = bottle.request.forms.get("csrf_token", "")
            if not hmac.compare_digest(sent, found[1]["csrf"]):
                bottle.response.status = 403
                return "CSRF check failed"
            panel.store.delete("tokens", found[1]["id"])
        bottle.response.delete_cookie(SESSION_COOKIE, path="/")
        return bottle.redirect("/login")

    def page(template: str, title: str):
        def show(**url_args: str) -> str:
            found = session()
            if not found:
                return bottle.redirect("/login")
            user, token = found
            return render(template, title=title, user=user, csrf=token["csrf"],
                          page=template, args=url_args)

        return show

    for path, (template, title) in PAGES.items():
        app.get(path, callback=page(template, title))
