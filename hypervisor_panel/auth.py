"""Users and logins (owner of the ``users`` table); tokens live in ``auth_tokens``.

Passwords are hashed with argon2id (``auth_passwords``); a hash made with older
parameters or the old scrypt scheme is replaced at the next successful login. Logins are
throttled per user name and per client address (``auth_throttle``). A password change or
reset revokes the user's other sessions and tokens.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, TypedDict

from .auth_passwords import hash_password, needs_rehash, verify_password
from .auth_throttle import LoginThrottle, TooManyAttempts
from .auth_tokens import KINDS, LOGIN_ABSOLUTE, LOGIN_IDLE, TokenRecord, TokenService, public_token
from .errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from .events import EventLog
from .references import References
from .store import Store

__all__ = ["Auth", "TokenRecord", "TooManyAttempts", "UserRecord", "hash_password",
           "public_token", "public_user", "verify_password"]

USERS = "users"
USERS_TABLE = USERS
ROLES = ("admin", "user")
SESSION_TTL = LOGIN_IDLE
LOGIN_TTL = LOGIN_ABSOLUTE


class UserRecord(TypedDict, total=False):
    id: str
    name: str
    role: str  # admin | user
    password_hash: str
    quota: dict[str, int]
    created: float


def public_user(user: dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it: never the password hash."""
    return {k: v for k, v in user.items() if k != "password_hash"}


class Auth:
    """Users, logins and their tokens on top of the store."""

    def __init__(self, store: Store, references: References | None = None,
                 events: EventLog | None = None,
                 throttle: LoginThrottle | None = None) -> None:
        self.store = store
        self.references = references or References()
        self.events = events
        self.throttle = throttle or LoginThrottle()
        self.tokens = TokenService(store)
        self._dummy_hash: str | None = None
        self.tokens.migrate()

    # -- users -------------------------------------------------------------------------
    def users(self) -> list[UserRecord]:
        return self.store.all(USERS)  # type: ignore[return-value]

    def get_user(self, user_id: str) -> UserRecord | None:
        return self.store.get(USERS, user_id)  # type: ignore[return-value]

    def require_user(self, user_id: str) -> UserRecord:
        user = self.get_user(user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} not found", code="user_not_found")
        return user

    def update_user(self, user_id: str, fields: dict[str, Any],
                    keep_token: str | None = None) -> UserRecord:
        """Change role, quota or password (validated by the caller's schema). A new
        password revokes every token of the user but ``keep_token`` (the caller's)."""
        self.require_user(user_id)
        fields = dict(fields)
        if "password" in fields:
            self.set_password(user_id, fields.pop("password"), keep_token=keep_token)
        if fields:
            self.store.update(USERS, user_id, fields)
        return self.require_user(user_id)

    def delete_user(self, user_id: str, actor: dict[str, Any]) -> None:
        """Delete a user who owns nothing, and their tokens; never yourself."""
        user = self.require_user(user_id)
        if user_id == actor["id"]:
            raise Conflict("you cannot delete yourself", code="self_delete")
        self.references.refuse_if_used("user", user_id, f"user {user['name']!r}",
                                       "user_has_vms")
        self.tokens.revoke_user(user_id)
        self.store.delete(USERS, user_id)

    def ensure_admin(self, password: str | None) -> str | None:
        """Create the ``admin`` user on first start; return a generated password if any."""
        if self.store.find_one(USERS, name="admin"):
            return None
        generated = None
        if not password:
            password = generated = secrets.token_urlsafe(12)
        self.create_user("admin", password, "admin")
        return generated

    def create_user(self, name: str, password: str, role: str, **extra: Any) -> dict[str, Any]:
        if role not in ROLES:
            raise Invalid(f"role must be one of {', '.join(ROLES)}")
        password_hash = hash_password(password)  # slow: outside the store lock
        with self.store.locked():
            if self.store.find_one(USERS, name=name):
                raise Conflict(f"user {name!r} already exists", code="already_exists")
            user = {
                "name": name,
                "role": role,
                "password_hash": password_hash,
                "created": time.time(),
                **extra,
            }
            return self.store.insert(USERS, user)

    def set_password(self, user_id: str, password: str, keep_token: str | None = None) -> int:
        """Set a new password; revoke the user's tokens but ``keep_token``: how many."""
        self.store.update(USERS, user_id, {"password_hash": hash_password(password)})
        revoked = self.tokens.revoke_user(user_id, keep=keep_token)
        if self.events is not None:
            self.events.emit("auth.password_changed", user_id, revoked=revoked)
        return revoked

    def change_own_password(self, user: dict[str, Any], token: dict[str, Any],
                            current: str, new: str, address: str | None = None) -> int:
        """A user's own password change: the current one is checked (and throttled)."""
        keys = self.throttle.keys(user["name"], address)
        self.throttle.check(keys)
        if not verify_password(current, user.get("password_hash", "")):
            self.throttle.failure(keys)
            raise Forbidden("the current password is wrong", code="wrong_password")
        return self.set_password(user["id"], new, keep_token=token["id"])

    # -- logins ------------------------------------------------------------------------
    def login(self, name: str, password: str, address: str | None = None) -> UserRecord:
        """The user whose name and password these are; throttled (429 while locked)."""
        keys = self.throttle.keys(name, address)
        self.throttle.check(keys)
        user = self.store.find_one(USERS, name=name)
        # Hash even for unknown users, so timing does not reveal which names exist.
        stored = user["password_hash"] if user else self._dummy()
        if not verify_password(password, stored) or not user:
            self.throttle.failure(keys)
            if self.events is not None:
                self.events.emit("auth.login_failed", user["id"] if user else None,
                                 address=address)
            raise Unauthorized("wrong username or password", code="invalid_credentials")
        self.throttle.success(name)
        if needs_rehash(stored):  # new parameters or the old scrypt scheme
            user = self.store.update(USERS, user["id"],  # type: ignore[assignment]
                                     {"password_hash": hash_password(password)})
        return user  # type: ignore[return-value]

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = hash_password(secrets.token_hex(8))
        return self._dummy_hash

    def login_token(self, name: str, password: str, kind: str = "login",
                    ttl: float | None = None, via: str = "api",
                    address: str | None = None,
                    replaces: str | None = None) -> tuple[UserRecord, str]:
        """Check the password and issue a login token or browser session: (user, secret).

        ``replaces`` is the session the client had (if any): it is revoked, so a login
        always starts a new session and an old cookie stops working.
        """
        user = self.login(name, password, address)
        secret, _record = self.tokens.issue(user, kind, lifetime=ttl, address=address)
        if replaces:
            self.logout_secret(replaces)
        if self.events is not None:
            self.events.emit("auth.login", user["id"], actor=user["id"], via=via,
                             address=address)
        return user, secret

    # -- tokens ------------------------------------------------------------------------
    def issue(self, user: dict[str, Any], kind: str, name: str = "",
              ttl: float | None = None, **options: Any) -> tuple[str, TokenRecord]:
        """Create an API token or a session; returns (secret, record). ``options``:
        ``scope``, ``vms``, ``address``, ``idle_timeout``."""
        return self.tokens.issue(user, kind, name=name, lifetime=ttl, **options)

    def resolve(self, secret: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (user, token record) for a bearer token or session id, or raise 401."""
        record = self.tokens.resolve(secret)
        user = self.store.get(USERS, record["user"])
        if not user:
            raise Unauthorized("the token's user no longer exists", code="invalid_token")
        return user, record  # type: ignore[return-value]

    def list_tokens(self, actor: dict[str, Any], user_id: str | None = None) -> list[TokenRecord]:
        """The live tokens of ``user_id`` (default: the actor); others' only for admins."""
        user_id = user_id or actor["id"]
        if user_id != actor["id"]:
            if actor.get("role") != "admin":
                raise Forbidden("only admins list other users' tokens", code="admin_only")
            self.require_user(user_id)
        return self.tokens.of_user(user_id)

    def logout(self, token_id: str) -> None:
        """End the session or token in use."""
        self.tokens.discard(token_id)

    def logout_secret(self, secret: str) -> None:
        """End the browser session whose secret this is, if it is still live."""
        try:
            record = self.tokens.resolve(secret)
        except Unauthorized:
            return
        if record.get("kind") == "session":
            self.tokens.discard(record["id"])

    def logout_everywhere(self, user: dict[str, Any], keep_api_tokens: bool = False) -> int:
        """Revoke every session and login token of the user (and API tokens unless
        ``keep_api_tokens``), the one in use included; returns how many."""
        kinds = tuple(k for k in KINDS if not (keep_api_tokens and k == "api"))
        revoked = self.tokens.revoke_user(user["id"], kinds=kinds)
        if self.events is not None:
            self.events.emit("auth.logout_everywhere", user["id"], actor=user["id"],
                             revoked=revoked)
        return revoked

    def revoke(self, token_id: str, user: dict[str, Any]) -> None:
        """Revoke one token: your own, or anyone's for admins (404 otherwise)."""
        record = self.tokens.get(token_id)
        if not record or (record["user"] != user["id"] and user["role"] != "admin"):
            raise NotFound(f"token {token_id!r} not found", code="token_not_found")
        self.tokens.revoke(token_id)
