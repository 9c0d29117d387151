"""Login, users and API tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...auth import ROLES, USERS, public_token, public_user
from ...errors import Conflict, NotFound
from ...validation import NAME
from ..router import ApiRequest, created

if TYPE_CHECKING:
    from ...panel import Panel

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


def register(panel: Panel) -> None:
    api = panel.api

    @api.route("/auth/login", "POST", summary="Exchange username and password for a token",
               role="public", body=LOGIN, tags=("auth",))
    def login(req: ApiRequest) -> dict[str, Any]:
        user = panel.auth.login(req.body["username"], req.body["password"])
        secret, _ = panel.auth.issue(user, "login", ttl=LOGIN_TTL)
        panel.emit("auth.login", user["id"], actor=user["id"])
        return {"token": secret, "user": public_user(user)}

    @api.route("/auth/logout", "POST", summary="Revoke the token or session in use",
               tags=("auth",))
    def logout(req: ApiRequest) -> dict[str, Any]:
        panel.store.delete("tokens", req.token["id"])
        return {"ok": True}

    @api.route("/auth/me", summary="The authenticated user", tags=("auth",))
    def me(req: ApiRequest) -> dict[str, Any]:
        return public_user(req.user)

    @api.route("/users", summary="Users", role="admin", tags=("users",))
    def users(req: ApiRequest) -> dict[str, Any]:
        return {"items": [public_user(u) for u in panel.store.all(USERS)]}

    @api.route("/users", "POST", summary="Create a user", role="admin", body=USER_CREATE,
               tags=("users",))
    def create_user(req: ApiRequest):
        body = req.body
        extra = {"quota": body["quota"]} if "quota" in body else {}
        user = panel.auth.create_user(body["name"], body["password"], body.get("role", "user"),
                                      **extra)
        return created(public_user(user))

    def find_user(user_id: str) -> dict[str, Any]:
        user = panel.store.get(USERS, user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} not found", code="user_not_found")
        return user

    @api.route("/users/<user_id>", summary="One user", role="admin", tags=("users",))
    def get_user(req: ApiRequest, user_id: str) -> dict[str, Any]:
        return public_user(find_user(user_id))

    @api.route("/users/<user_id>", "PATCH", summary="Change a user's password, role or quota",
               role="admin", body=USER_PATCH, tags=("users",))
    def patch_user(req: ApiRequest, user_id: str) -> dict[str, Any]:
        find_user(user_id)
        fields = dict(req.body)
        if "password" in fields:
            panel.auth.set_password(user_id, fields.pop("password"))
        if fields:
            panel.store.update(USERS, user_id, fields)
        return public_user(find_user(user_id))

    @api.route("/users/<user_id>", "DELETE", summary="Delete a user without VMs",
               role="admin", status=204, tags=("users",))
    def delete_user(req: ApiRequest, user_id: str) -> None:
        user = find_user(user_id)
        if user_id == req.user["id"]:
            raise Conflict("you cannot delete yourself", code="self_delete")
        if panel.store.find("vms", owner=user_id):
            raise Conflict(f"user {user['name']!r} still owns VMs", code="user_has_vms")
        for token in panel.store.find("tokens", user=user_id):
            panel.store.delete("tokens", token["id"])
        panel.store.delete(USERS, user_id)

    @api.route("/tokens", summary="Your API tokens (admins: all)", tags=("tokens",))
    def tokens(req: ApiRequest) -> dict[str, Any]:
        items = [t for t in panel.store.all("tokens")
                 if t["kind"] == "api" and (req.is_admin or t["user"] == req.user["id"])]
        return {"items": [public_token(t) for t in items]}

    @api.route("/tokens", "POST", summary="Create an API token (shown once)",
               body=TOKEN_CREATE, tags=("tokens",))
    def create_token(req: ApiRequest):
        secret, record = panel.auth.issue(req.user, "api", name=req.body.get("name", ""))
        return created({**public_token(record), "token": secret})

    @api.route("/tokens/<token_id>", "DELETE", summary="Revoke an API token", status=204,
               tags=("tokens",))
    def delete_token(req: ApiRequest, token_id: str) -> None:
        panel.auth.revoke(token_id, req.user)
