"""Users, password hashing, API tokens and browser sessions with CSRF tokens.

Passwords are hashed with scrypt (stdlib). API tokens and session ids are random; only
their SHA-256 is stored, keyed by a prefix of it so a lookup is O(1).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from .errors import Conflict, Invalid, NotFound, Unauthorized
from .store import Store

USERS, TOKENS = "users", "tokens"
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


def public_user(user: dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it: never the password hash."""
    return {k: v for k, v in user.items() if k != "password_hash"}


class Auth:
    """Authentication and token bookkeeping on top of the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._dummy_hash = hash_password(secrets.token_hex(8))

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

    def revoke(self, token_id: str, user: dict[str, Any]) -> None:
        record = self.store.get(TOKENS, token_id)
        if not record or (record["user"] != user["id"] and user["role"] != "admin"):
            raise NotFound(f"token {token_id!r} not found")
        self.store.delete(TOKENS, token_id)


def public_token(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("hash", "csrf")}
