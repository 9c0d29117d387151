"""Login, users and tokens (API tokens, login tokens and browser sessions)."""

from __future__ import annotations

from typing import Any

from ..auth import LOGIN_TTL, ROLES, public_token, public_user
from ..auth_tokens import API_DEFAULT_DAYS, API_MAX_DAYS, SCOPES
from ..host import PanelHost
from ..limits import PERMISSIONS, QUOTA_MAXIMA, QUOTA_WORDS
from ..routes import ApiRequest, Query, RouteTable, created
from ..validation import NAME
from . import schemas as s

PASSWORD = {"type": "string", "minLength": 8, "maxLength": 256}
QUOTA = {
    "type": "object",
    "additionalProperties": False,
    "description": "at most this much for the user's VMs (a missing key: no limit)",
    "properties": {key: {"type": "integer", "minimum": 0, "maximum": QUOTA_MAXIMA[key],
                         "description": QUOTA_WORDS[key]} for key in QUOTA_MAXIMA},
}
PERMISSIONS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "description": "what a user may do beyond their VMs (admins may do everything)",
    "properties": {name: {"type": "boolean", "description": text}
                   for name, text in PERMISSIONS.items()},
}
LOGIN = {
    "type": "object",
    "additionalProperties": False,
    "required": ["username", "password"],
    "properties": {"username": {"type": "string", "maxLength": 64},
                   "password": {"type": "string", "maxLength": 256}},
}
USER_CREATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "password"],
    "properties": {"name": NAME, "password": PASSWORD, "role": {"enum": list(ROLES)},
                   "quota": QUOTA, "permissions": PERMISSIONS_SCHEMA},
}
USER_PATCH = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {"password": PASSWORD, "role": {"enum": list(ROLES)}, "quota": QUOTA,
                   "permissions": PERMISSIONS_SCHEMA},
}
TOKEN_CREATE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 100},
        "expires_in_days": {"type": "integer", "minimum": 1, "maximum": API_MAX_DAYS,
                            "default": API_DEFAULT_DAYS},
        "scope": {"enum": list(SCOPES), "default": "full",
                  "description": "read: GET requests only"},
        "vms": {"type": "array", "maxItems": 100, "uniqueItems": True,
                "items": {"type": "string", "maxLength": 64},
                "description": "only these VMs' routes (and the VM and task lists, "
                               "filtered to them)"},
    },
}
TOKEN = {**s.TOKEN, "properties": {
    **s.TOKEN["properties"], "kind": {"enum": ["api", "login", "session"]},
    "expires": {"type": "number"}, "idle_timeout": {"type": ["number", "null"]},
    "last_used": s.TIME, "scope": {"enum": list(SCOPES)},
    "vms": {"type": ["array", "null"], "items": {"type": "string"}},
    "address": s.NULLABLE_STRING, "current": {"type": "boolean"}}}
TOKEN_CREATED = {**TOKEN, "required": [*TOKEN["required"], "token"],
                 "properties": {**TOKEN["properties"], "token": {"type": "string"}}}
PASSWORD_CHANGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["current_password", "new_password"],
    "properties": {"current_password": {"type": "string", "maxLength": 256},
                   "new_password": PASSWORD},
}
LOGOUT_EVERYWHERE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"keep_api_tokens": {"type": "boolean", "default": False}},
}
REVOKED = s.obj(["ok", "revoked"], ok={"type": "boolean"}, revoked={"type": "integer"})


def declare(api: RouteTable, panel: PanelHost) -> None:
    _declare_auth(api, panel)
    _declare_users(api, panel)
    _declare_tokens(api, panel)


def _declare_auth(api: RouteTable, panel: PanelHost) -> None:
    auth = panel.auth

    @api.route("/auth/login", "POST", summary="Exchange username and password for a login "
               "token (12 h idle, 7 days at most; 429 after repeated failures)",
               role="public", body=LOGIN, response=s.LOGIN, tags=("auth",),
               errors=(401, 429))
    def login(req: ApiRequest) -> dict[str, Any]:
        user, secret = auth.login_token(req.body["username"], req.body["password"],
                                        ttl=LOGIN_TTL, address=req.remote_addr)
        return {"token": secret, "user": public_user(user)}

    @api.route("/auth/logout-everywhere", "POST", summary="Revoke all your sessions and "
               "tokens, this one included", body=LOGOUT_EVERYWHERE, response=REVOKED,
               tags=("auth",))
    def logout_everywhere(req: ApiRequest) -> dict[str, Any]:
        revoked = auth.logout_everywhere(req.user, bool(req.body.get("keep_api_tokens")))
        return {"ok": True, "revoked": revoked}

    @api.route("/auth/password", "POST", summary="Change your password (revokes your "
               "other sessions and tokens)", body=PASSWORD_CHANGE, response=REVOKED,
               tags=("auth",), errors=(429,))
    def change_password(req: ApiRequest) -> dict[str, Any]:
        revoked = auth.change_own_password(req.user, req.token, req.body["current_password"],
                                           req.body["new_password"], req.remote_addr)
        return {"ok": True, "revoked": revoked}

    @api.route("/auth/logout", "POST", summary="Revoke the token or session in use",
               body=s.EMPTY_BODY, response=s.OK, tags=("auth",))
    def logout(req: ApiRequest) -> dict[str, Any]:
        auth.logout(req.token["id"])
        return {"ok": True}

    @api.route("/auth/me", summary="The authenticated user", response=s.USER,
               tags=("auth",))
    def me(req: ApiRequest) -> dict[str, Any]:
        return _with_usage(panel, req.user)


def _with_usage(panel: PanelHost, user: dict[str, Any]) -> dict[str, Any]:
    """The user as the API shows it, with what their VMs take (their quota's units)."""
    usage = {**panel.vms.usage(user["id"]), "backups": panel.backups.count_of(user["id"])}
    return {**public_user(user), "usage": usage}


def _declare_users(api: RouteTable, panel: PanelHost) -> None:
    auth = panel.auth

    @api.route("/users", summary="Users", role="admin", response=s.items(s.USER),
               tags=("users",))
    def list_users(req: ApiRequest) -> dict[str, Any]:
        return {"items": [_with_usage(panel, u) for u in auth.users()]}

    @api.route("/users", "POST", summary="Create a user", role="admin", body=USER_CREATE,
               status=201, response=s.USER, tags=("users",), errors=(409,))
    def create_user(req: ApiRequest):
        body = req.body
        extra = {key: body[key] for key in ("quota", "permissions") if key in body}
        user = auth.create_user(body["name"], body["password"], body.get("role", "user"),
                                **extra)
        return created(_with_usage(panel, user))

    @api.route("/users/{user_id}", summary="One user", role="admin", response=s.USER,
               tags=("users",))
    def get_user(req: ApiRequest, user_id: str) -> dict[str, Any]:
        return _with_usage(panel, auth.require_user(user_id))

    @api.route("/users/{user_id}", "PATCH", summary="Change a user's password (revokes "
               "their sessions and tokens), role or quota", role="admin", body=USER_PATCH,
               response=s.USER, tags=("users",))
    def patch_user(req: ApiRequest, user_id: str) -> dict[str, Any]:
        user = auth.update_user(user_id, req.body, keep_token=req.token["id"])
        return _with_usage(panel, user)

    @api.route("/users/{user_id}", "DELETE", summary="Delete a user without VMs",
               role="admin", tags=("users",), errors=(409,))
    def delete_user(req: ApiRequest, user_id: str) -> None:
        auth.delete_user(user_id, req.user)


def _declare_tokens(api: RouteTable, panel: PanelHost) -> None:
    auth = panel.auth

    @api.route("/tokens", summary="Your live tokens: API tokens, login tokens and "
               "browser sessions (admins: ?user= lists a user's)",
               response=s.items(TOKEN), tags=("tokens",), errors=(404,),  # no such ?user=
               query=(Query("user", {"type": "string"}, "a user id (admins)"),))
    def list_tokens(req: ApiRequest) -> dict[str, Any]:
        tokens = auth.list_tokens(req.user, req.query.get("user"))
        return {"items": [public_token(t, current=req.token["id"]) for t in tokens]}

    @api.route("/tokens", "POST", summary="Create an API token (shown once), optionally "
               "read-only or limited to some VMs", body=TOKEN_CREATE, status=201,
               response=TOKEN_CREATED, tags=("tokens",), errors=(404,))  # a VM not yours
    def create_token(req: ApiRequest):
        body = req.body
        vms = body.get("vms")
        for vm_id in vms or ():
            panel.vms.require(vm_id, req.user)  # 404 for a VM the user cannot see
        secret, record = auth.issue(
            req.user, "api", name=body.get("name", ""),
            ttl=body.get("expires_in_days", API_DEFAULT_DAYS) * 86400,
            scope=body.get("scope", "full"), vms=vms, address=req.remote_addr)
        return created({**public_token(record), "token": secret})

    @api.route("/tokens/{token_id}", "DELETE", summary="Revoke a token or session (yours; "
               "admins: anyone's)", tags=("tokens",))
    def delete_token(req: ApiRequest, token_id: str) -> None:
        auth.revoke(token_id, req.user)
