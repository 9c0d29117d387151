"""The browser UI: server-rendered page shells whose scripts call the JSON API.

Login sets an HttpOnly, SameSite=Strict session cookie; every page carries the session's
CSRF token in ``<meta name="csrf-token">`` and the scripts send it as ``X-CSRF-Token``.
The sign-in form itself carries a pre-session CSRF token bound to a cookie (login CSRF:
another site cannot sign a browser in to an account of its choosing); each sign-in makes
a new session and ends the one the browser had. Failed sign-ins are throttled (429).
No JavaScript build step: plain ES modules in ``static/``.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import bottle

from .. import __version__
from ..audit import AuditCall
from ..auth import LOGIN_TTL, TooManyAttempts
from ..errors import PanelError
from .glue import SESSION_COOKIE

if TYPE_CHECKING:
    from ..panel import Panel

log = logging.getLogger(__name__)

SESSION_TTL = LOGIN_TTL  # the cookie's life; the server also ends sessions idle for 12 h
LOGIN_COOKIE = "hvp_login"  # the sign-in form's pre-session CSRF nonce
LOGIN_FORM_TTL = 3600
_NONCE = re.compile(r"[A-Za-z0-9_-]{32}")
AUDIT_ERROR, AUDIT_USER = "hvp.audit_error", "hvp.audit_user"  # environ: for _audited
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
    "/users": ("users", "Users"),
    "/audit": ("audit", "Audit log"),
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


class LoginForms:
    """Pre-session CSRF tokens: the form's token is an HMAC of a nonce kept in a
    SameSite=Strict, HttpOnly cookie, so only a form this panel served to this browser
    passes. The key lives in memory: after a restart the form is simply shown again."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def token(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), "sha256").hexdigest()

    def valid(self, nonce: str | None, sent: str | None) -> bool:
        return bool(nonce and sent) and hmac.compare_digest(self.token(nonce), sent or "")

    def issue(self) -> str:
        """The browser's nonce (a new one if it has none) in the cookie, for another hour;
        returns the token the form carries. Keeping the nonce keeps other tabs' forms valid."""
        nonce = bottle.request.get_cookie(LOGIN_COOKIE) or ""
        if not _NONCE.fullmatch(nonce):
            nonce = secrets.token_urlsafe(24)
        bottle.response.set_cookie(LOGIN_COOKIE, nonce, path="/login", httponly=True,
                                   samesite="strict", max_age=LOGIN_FORM_TTL,
                                   secure=_https())
        return self.token(nonce)


def _https() -> bool:
    return bottle.request.urlparts.scheme == "https"


def _login_form(forms: LoginForms, status: int, error: str | None, username: str) -> str:
    bottle.response.status = status
    return render("login", error=error, username=username, csrf=forms.issue())


def _register_login(app: bottle.Bottle, panel: Panel) -> None:
    forms = LoginForms()

    @app.get("/login")
    def login_page() -> str:
        if _session(panel):
            return bottle.redirect("/")
        return _login_form(forms, 200, None, "")

    @app.post("/login")
    def login() -> str:
        username = bottle.request.forms.getunicode("username", "") or ""
        password = bottle.request.forms.getunicode("password", "") or ""
        return _audited(panel, "/login", lambda: _sign_in(panel, forms, username, password),
                        body={"username": username})

    _register_logout(app, panel)


def _sign_in(panel: Panel, forms: LoginForms, username: str, password: str) -> str:
    """Check the form's CSRF token and the password; start a session (a redirect)."""
    if not forms.valid(bottle.request.get_cookie(LOGIN_COOKIE),
                       bottle.request.forms.get("csrf_token")):
        bottle.request.environ[AUDIT_ERROR] = "csrf_failed"
        return _login_form(forms, 403, "This sign-in form has expired or was not sent "
                           "from this panel; please sign in again.", username)
    try:
        user, secret = panel.auth.login_token(
            username, password, kind="session", ttl=SESSION_TTL, via="browser",
            address=bottle.request.environ.get("REMOTE_ADDR"),
            replaces=bottle.request.get_cookie(SESSION_COOKIE))
    except TooManyAttempts as exc:
        bottle.request.environ[AUDIT_ERROR] = exc.code
        bottle.response.set_header("Retry-After", str(exc.retry_after))
        return _login_form(forms, 429, exc.message, username)
    except PanelError as exc:
        bottle.request.environ[AUDIT_ERROR] = exc.code
        return _login_form(forms, 401, exc.message, username)
    bottle.request.environ[AUDIT_USER] = user
    bottle.response.delete_cookie(LOGIN_COOKIE, path="/login")
    bottle.response.set_cookie(
        SESSION_COOKIE, secret, path="/", httponly=True, samesite="strict",
        max_age=SESSION_TTL, secure=_https(),
    )
    return bottle.redirect("/")


def _audited(panel: Panel, path: str, answer: Callable[[], str],
             body: dict[str, Any] | None = None,
             found: tuple[dict, dict] | None = None) -> str:
    """``answer()``, recorded in the audit log as ``POST path`` (the API's calls are
    recorded by the glue; these two pages are not API routes)."""
    started, status = time.monotonic(), 500
    try:
        text = answer()
        status = bottle.response.status_code
        return text
    except bottle.HTTPResponse as exc:  # the redirect of a success
        status = exc.status_code
        raise
    finally:
        request = bottle.request
        try:
            panel.audit.record(AuditCall(
                method="POST", route=path, path=path, status=status,
                error=request.environ.get(AUDIT_ERROR), body=body,
                user=found[0] if found else request.environ.get(AUDIT_USER),
                token=found[1] if found else None,
                address=request.environ.get("REMOTE_ADDR"),
                duration_ms=(time.monotonic() - started) * 1000))
        except Exception:  # never fails the sign-in
            log.exception("could not record POST %s in the audit log", path)


def _register_logout(app: bottle.Bottle, panel: Panel) -> None:
    @app.post("/logout")
    def logout() -> str:
        found = _session(panel)
        return _audited(panel, "/logout", lambda: _sign_out(panel, found), found=found)


def _sign_out(panel: Panel, found: tuple[dict, dict] | None) -> str:
    """End the browser's session (CSRF-checked) and go to the sign-in page."""
    if found:
        sent = bottle.request.forms.get("csrf_token", "")
        if not hmac.compare_digest(sent, found[1]["csrf"]):
            bottle.request.environ[AUDIT_ERROR] = "csrf_failed"
            bottle.response.status = 403
            return "CSRF check failed"
        panel.auth.logout(found[1]["id"])
    bottle.response.delete_cookie(SESSION_COOKIE, path="/")
    return bottle.redirect("/login")
