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
from .glue import SESSION_COOKIE

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
    "/networks": ("networks", "Networks"),
    "/ip-pools": ("ip_pools", "IP pools"),
    "/vm-templates": ("vm_templates", "VM templates"),
    "/os-templates": ("os_templates", "OS templates"),
    "/recipes": ("recipes", "Recipes"),
    "/nodes": ("nodes", "Nodes"),
    "/backups": ("backups", "Backups"),
    "/backup-schedules": ("backup_schedules", "Backup schedules"),
    "/backup-targets": ("backup_targets", "Backup targets"),
    "/tasks": ("tasks", "Tasks"),
}


def render(name: str, **context: Any) -> str:
    return bottle.template(name, template_lookup=[TEMPLATE_DIR], version=__version__, **context)


ERROR_PAGES = {
    404: ("Page not found", "There is no page at {path}."),
    405: ("Method not allowed", "This page does not accept {method} requests."),
}


def error_page(status: int, path: str, method: str) -> str:
    """The styled page for a failed UI request; needs no session (anonymous users see it)."""
    title, message = ERROR_PAGES.get(
        status, ("Something went wrong", "The panel could not show this page; see the panel log."))
    return render("error", title=title, status=status,
                  message=message.format(path=path, method=method))


def _session(panel: Panel) -> tuple[dict, dict] | None:
    """The browser session of this request (user, token), if any."""
    secret = bottle.request.get_cookie(SESSION_COOKIE)
    if not secret:
        return None
    try:
        user, token = panel.auth.resolve(secret)
    except PanelError:
        return None
    return (user, token) if token["kind"] == "session" else None


def register_ui(app: bottle.Bottle, panel: Panel) -> None:
    """Static files, sign-in and sign-out, and one page per entry of PAGES."""

    @app.get("/static/<path:path>")
    def static(path: str):
        response = bottle.static_file(path, root=STATIC_DIR)
        response.set_header("Cache-Control", "no-cache")
        return response

    _register_login(app, panel)

    def page(template: str, title: str):
        def show(**url_args: str) -> str:
            found = _session(panel)
            if not found:
                return bottle.redirect("/login")
            user, token = found
            return render(template, title=title, user=user, csrf=token["csrf"],
                          page=template, args=url_args)

        return show

    for path, (template, title) in PAGES.items():
        app.get(path, callback=page(template, title))


def _register_login(app: bottle.Bottle, panel: Panel) -> None:
    @app.get("/login")
    def login_page() -> str:
        if _session(panel):
            return bottle.redirect("/")
        return render("login", error=None, username="")

    @app.post("/login")
    def login() -> str:
        username = bottle.request.forms.getunicode("username", "") or ""
        password = bottle.request.forms.getunicode("password", "") or ""
        try:
            _user, secret = panel.auth.login_token(username, password, kind="session",
                                                   ttl=SESSION_TTL, via="browser")
        except PanelError as exc:
            bottle.response.status = 401
            return render("login", error=exc.message, username=username)
        bottle.response.set_cookie(
            SESSION_COOKIE, secret, path="/", httponly=True, samesite="strict",
            max_age=SESSION_TTL, secure=bottle.request.urlparts.scheme == "https",
        )
        return bottle.redirect("/")

    @app.post("/logout")
    def logout() -> str:
        found = _session(panel)
        if found:
            sent = bottle.request.forms.get("csrf_token", "")
            if not hmac.compare_digest(sent, found[1]["csrf"]):
                bottle.response.status = 403
                return "CSRF check failed"
            panel.auth.logout(found[1]["id"])
        bottle.response.delete_cookie(SESSION_COOKIE, path="/")
        return bottle.redirect("/login")
