"""Login, users and API tokens."""

from __future__ import annotations

from typing import Any

from ..auth import ROLES, public_token, public_user
from ..host import PanelHost
from ..routes import ApiRequest, RouteTable, created
from ..validation import NAME
from . import schemas as s

LOGIN_TTL = 7 * 24 * 3600
PASSWORD = {"type": "string", "minLength": 8, "maxLength": 256}
QUOTA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "vms": {"type": "integer", "minimum": 0},
        "memory_mib": {"type": "integer", "minimum": 0},
        "vcpus": {"type": "integer", "minimum": 0},
    },
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
                   "quota": QUOTA},
}
USER_PATCH = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {"password": PASSWORD, "role": {"enum": list(ROLES)}, "quota": QUOTA},
}
TOKEN_CREATE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "maxLength": 100}},
}


def declare(api: RouteTable, panel: PanelHost) -> None:
    _declare_auth(api, panel)
    _declare_users(api, panel)
    _declare_tokens(api, panel)


def _declare_auth(api: RouteTable, panel: PanelHost) -> None:
    auth = panel.auth

    @api.route("/auth/login", "POST", summary="Exchange username and password for a token",
               role="public", body=LOGIN, response=s.LOGIN, tags=("auth",))
    def login(req: ApiRequest) -> dict[str, Any]:
        user, secret = auth.login_token(req.body["username"], req.body["password"],
                                        ttl=LOGIN_TTL)
        return {"token": secret, "user": public_user(user)}

    @api.route("/auth/logout", "POST", summary="Revoke the token or session in use",
               body=s.EMPTY_BODY, response=s.OK, tags=("auth",))
    def logout(req: ApiRequest) -> dict[str, Any]:
        auth.logout(req.token["id"])
        return {"ok": True}

    @api.route("/auth/me", summary="The authenticated user", response=s.USER,
               tags=("auth",))
    def me(req: ApiRequest) -> dict[str, Any]:
        return public_user(req.user)


def _declare_users(api: RouteTable, panel: PanelHost) -> None:
    auth = panel.auth

    @api.route("/users", summary="Users", role="admin", response=s.items(s.USER),
               tags=("users",))
    def list_users(req: ApiRequest) -> dict[str, Any]:
        return {"items": [public_user(u) for u in auth.users()]}

    @api.route("/users", "POST", summary="Create a user", role="admin", body=USER_CREATE,
               status=201, response=s.USER, tags=("users",), errors=(409,))
    def create_user(req: ApiRequest):
        body = req.body
        extra = {"quota": body["quota"]} if "quota" in body else {}
        return created(public_user(auth.create_user(body["name"], body["password"],
                                                    body.get("role", "user"), **extra)))

    @api.route("/users/{user_id}", summary="One user", role="admin", response=s.USER,
               tags=("users",))
    def get_user(req: ApiRequest, user_id: str) -> dict[str, Any]:
        return public_user(auth.require_user(user_id))

    @api.route("/users/{user_id}", "PATCH", summary="Change a user's password, role or "
               "quota", role="admin", body=USER_PATCH, response=s.USER, tags=("users",))
    def patch_user(req: ApiRequest, user_id: str) -> dict[str, Any]:
        return public_user(auth.update_user(user_id, req.body))

    @api.route("/users/{user_id}", "DELETE", summary="Delete a user without VMs",
               role="admin", tags=("users",), errors=(409,))
    def delete_user(req: ApiRequest, user_id: str) -> None:
        auth.delete_user(user_id, req.user)


def _declare_tokens(api: RouteTable, panel: PanelHost) -> None:
    auth = panel.auth

    @api.route("/tokens", summary="Your API tokens (admins: all)", response=s.items(s.TOKEN),
               tags=("tokens",))
    def list_tokens(req: ApiRequest) -> dict[str, Any]:
        return {"items": [public_token(t) for t in auth.api_tokens(req.user)]}

    @api.route("/tokens", "POST", summary="Create an API token (shown once)",
               body=TOKEN_CREATE, status=201, response=s.TOKEN_CREATED, tags=("tokens",))
    def create_token(req: ApiRequest):
        secret, record = auth.issue(req.user, "api", name=req.body.get("name", ""))
        return created({**public_token(record), "token": secret})

    @api.route("/tokens/{token_id}", "DELETE", summary="Revoke an API token",
               tags=("tokens",))
    def delete_token(req: ApiRequest, token_id: str) -> None:
        auth.revoke(token_id, req.user)
