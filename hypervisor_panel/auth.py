"""Users, password hashing, API tokens and browser sessions with CSRF tokens.

Passwords are hashed with scrypt (stdlib). API tokens and session ids are random; only
their SHA-256 is stored, keyed by a prefix of it so a lookup is O(1).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any, TypedDict

from .errors import Conflict, Invalid, NotFound, Unauthorized
from .events import EventLog
from .references import References
from .store import Store

USERS, TOKENS = "users", "tokens"
USERS_TABLE, TOKENS_TABLE = USERS, TOKENS
ROLES = ("admin", "user")
SESSION_TTL = 12 * 3600
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserRecord(TypedDict, total=False):
    id: str
    name: str
    role: str  # admin | user
    password_hash: str
    quota: dict[str, int]
    created: float


class TokenRecord(TypedDict, total=False):
    id: str
    name: str
    kind: str  # api | login | session
    user: str
    hash: str
    csrf: str
    created: float
    expires: float | None


def public_user(user: dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it: never the password hash."""
    return {k: v for k, v in user.items() if k != "password_hash"}


class Auth:
    """Authentication and token bookkeeping on top of the store."""

    def __init__(self, store: Store, references: References | None = None,
                 events: EventLog | None = None) -> None:
        self.store = store
        self.references = references or References()
        self.events = events
        self._dummy_hash = hash_password(secrets.token_hex(8))

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

    def update_user(self, user_id: str, fields: dict[str, Any]) -> UserRecord:
        """Change role, quota or password (validated by the caller's schema)."""
        self.require_user(user_id)
        fields = dict(fields)
        if "password" in fields:
            self.set_password(user_id, fields.pop("password"))
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
        for token in self.store.find(TOKENS, user=user_id):
            self.store.delete(TOKENS, token["id"])
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
        with self.store.locked():
            if self.store.find_one(USERS, name=name):
                raise Conflict(f"user {name!r} already exists", code="already_exists")
            user = {
                "name": name,
                "role": role,
                "password_hash": hash_password(password),
                "created": time.time(),
                **extra,
            }
            return self.store.insert(USERS, user)

    def set_password(self, user_id: str, password: str) -> None:
        self.store.update(USERS, user_id, {"password_hash": hash_password(password)})

    def login(self, name: str, password: str) -> dict[str, Any]:
        user = self.store.find_one(USERS, name=name)
        # Hash even for unknown users, so timing does not reveal which names exist.
        ok = verify_password(password, user["password_hash"] if user else self._dummy_hash)
        if not user or not ok:
            raise Unauthorized("wrong username or password", code="invalid_credentials")
        return user

    def login_token(self, name: str, password: str, kind: str = "login",
                    ttl: float | None = None, via: str = "api") -> tuple[UserRecord, str]:
        """Check the password and issue a login token or browser session: (user, secret)."""
        user = self.login(name, password)
        secret, _record = self.issue(user, kind, ttl=ttl)
        if self.events is not None:
            self.events.emit("auth.login", user["id"], actor=user["id"], via=via)
        return user, secret  # type: ignore[return-value]

    def issue(self, user: dict[str, Any], kind: str, name: str = "", ttl: float | None = None):
        """Create an API token or a browser session; returns (secret, record)."""
        secret = secrets.token_urlsafe(32)
        digest = _token_hash(secret)
        record = {
            "id": digest[:24],
            "name": name or kind,
            "kind": kind,
            "user": user["id"],
            "hash": digest,
            "created": time.time(),
            "expires": time.time() + ttl if ttl else None,
        }
        if kind == "session":
            record["csrf"] = secrets.token_urlsafe(24)
        self.store.insert(TOKENS, record)
        return secret, record

    def resolve(self, secret: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (user, token record) for a bearer token or session id, or raise 401."""
        digest = _token_hash(secret)
        record = self.store.get(TOKENS, digest[:24])
        if not record or not hmac.compare_digest(record["hash"], digest):
            raise Unauthorized("invalid or expired token", code="invalid_token")
        if record.get("expires") and record["expires"] < time.time():
            self.store.delete(TOKENS, record["id"])
            raise Unauthorized("invalid or expired token", code="invalid_token")
        user = self.store.get(USERS, record["user"])
        if not user:
            raise Unauthorized("the token's user no longer exists", code="invalid_token")
        return user, record

    def api_tokens(self, user: dict[str, Any]) -> list[TokenRecord]:
        """The API tokens ``user`` may see (admins: everyone's)."""
        admin = user.get("role") == "admin"
        return [t for t in self.store.all(TOKENS)  # type: ignore[misc]
                if t["kind"] == "api" and (admin or t["user"] == user["id"])]

    def logout(self, token_id: str) -> None:
        """End the session or token in use."""
        self.store.delete(TOKENS, token_id)

    def revoke(self, token_id: str, user: dict[str, Any]) -> None:
        record = self.store.get(TOKENS, token_id)
        if not record or (record["user"] != user["id"] and user["role"] != "admin"):
            raise NotFound(f"token {token_id!r} not found")
        self.store.delete(TOKENS, token_id)


def public_token(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("hash", "csrf")}
