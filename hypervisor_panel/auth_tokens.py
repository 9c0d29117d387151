"""Tokens: API tokens, login tokens and browser sessions (owner of the ``tokens`` table).

A token's secret is 256 random bits shown once; the store keeps only its SHA-256 (the
record id is a prefix of it, so a lookup is O(1)), never the secret. Every token expires:
login tokens and sessions after ``LOGIN_IDLE`` without use and at the latest
``LOGIN_ABSOLUTE`` after login; API tokens after their ``expires_in_days`` (default
``API_DEFAULT_DAYS``, at most ``API_MAX_DAYS``). API tokens may be scoped: ``scope:
"read"`` (GET only) and/or ``vms: [ids]`` (only those VMs' routes); see ``auth_scope``.

Records written by earlier versions (no ``v`` field) are migrated at start: a record that
carries a secret in clear, or cannot be looked up by its hash, is deleted; old login
tokens and sessions are deleted (their owners sign in again); old API tokens get the
default lifetime from now and the full scope.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, TypedDict

from .errors import NotFound, Unauthorized

log = logging.getLogger(__name__)

TOKENS = "tokens"
FORMAT = 2  # the ``v`` of records written by this version
KINDS = ("api", "login", "session")
SCOPES = ("full", "read")
LOGIN_IDLE = 12 * 3600
LOGIN_ABSOLUTE = 7 * 24 * 3600
API_DEFAULT_DAYS = 90
API_MAX_DAYS = 365
TOUCH_EVERY = 60.0  # seconds between two writes of ``last_used``
CLEAR_FIELDS = ("token", "secret", "value", "plain", "session")
HIDDEN_FIELDS = ("hash", "csrf", "v")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class TokenRecord(TypedDict, total=False):
    id: str
    v: int
    name: str
    kind: str  # api | login | session
    user: str
    hash: str  # SHA-256 of the secret (hex)
    csrf: str  # sessions: the CSRF token pages carry
    created: float
    expires: float  # absolute end of life
    idle_timeout: float | None  # seconds without use that end it (login, session)
    last_used: float
    scope: str  # full | read
    vms: list[str] | None  # None: every VM the user may use
    address: str | None  # where it was issued from


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def public_token(record: dict[str, Any], current: str | None = None) -> dict[str, Any]:
    """A token as the API shows it: never its hash or CSRF token."""
    out = {k: v for k, v in record.items() if k not in HIDDEN_FIELDS}
    if current is not None:
        out["current"] = record.get("id") == current
    return out


class TokenService:
    """Issue, resolve, list and revoke tokens. ``clock`` is the wall clock (settable)."""

    def __init__(self, store: Any, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    # -- issuing -------------------------------------------------------------------------
    def issue(self, user: dict[str, Any], kind: str, *, name: str = "",
              lifetime: float | None = None, idle_timeout: float | None = None,
              scope: str = "full", vms: list[str] | None = None,
              address: str | None = None) -> tuple[str, TokenRecord]:
        """Create a token; returns (secret, record). The secret is never stored."""
        if kind not in KINDS or scope not in SCOPES:
            raise ValueError(f"bad token kind {kind!r} or scope {scope!r}")
        if kind != "api":
            lifetime = min(lifetime or LOGIN_ABSOLUTE, LOGIN_ABSOLUTE)
            idle_timeout = idle_timeout or LOGIN_IDLE
        lifetime = lifetime or API_DEFAULT_DAYS * 86400
        secret = secrets.token_urlsafe(32)  # 256 bits
        digest = token_hash(secret)
        now = self.clock()
        record: TokenRecord = {
            "id": digest[:24], "v": FORMAT, "name": name or kind, "kind": kind,
            "user": user["id"], "hash": digest, "created": now, "expires": now + lifetime,
            "idle_timeout": idle_timeout, "last_used": now, "scope": scope,
            "vms": list(vms) if vms is not None else None, "address": address,
        }
        if kind == "session":
            record["csrf"] = secrets.token_urlsafe(24)
        self.store.insert(TOKENS, dict(record))
        return secret, record

    # -- using ---------------------------------------------------------------------------
    def resolve(self, secret: str) -> TokenRecord:
        """The live record of ``secret``; 401 when unknown, revoked or expired."""
        digest = token_hash(secret)
        record = self.store.get(TOKENS, digest[:24])
        if not record or not hmac.compare_digest(record.get("hash", ""), digest):
            raise Unauthorized("invalid or expired token", code="invalid_token")
        now = self.clock()
        if self._expired(record, now):
            self.store.delete(TOKENS, record["id"])
            raise Unauthorized("invalid or expired token", code="invalid_token")
        idle = record.get("idle_timeout")
        every = min(TOUCH_EVERY, idle / 10) if idle else TOUCH_EVERY
        if now - record.get("last_used", 0) >= every:
            record = self.store.update(TOKENS, record["id"], {"last_used": now})
        return record  # type: ignore[return-value]

    @staticmethod
    def _expired(record: dict[str, Any], now: float) -> bool:
        if record.get("expires") is None or record["expires"] <= now:
            return True
        idle = record.get("idle_timeout")
        return bool(idle) and record.get("last_used", record.get("created", 0)) + idle <= now

    # -- listing and revoking ------------------------------------------------------------
    def get(self, token_id: str) -> TokenRecord | None:
        record = self.store.get(TOKENS, token_id)
        if record is None or self._expired(record, self.clock()):
            return None
        return record  # type: ignore[return-value]

    def of_user(self, user_id: str) -> list[TokenRecord]:
        """The user's live tokens, oldest first (expired ones are removed on the way)."""
        now, live = self.clock(), []
        for record in self.store.find(TOKENS, user=user_id):
            if self._expired(record, now):
                self.store.delete(TOKENS, record["id"])
            else:
                live.append(record)
        return sorted(live, key=lambda r: r.get("created", 0))  # type: ignore[return-value]

    def revoke(self, token_id: str) -> None:
        if self.store.get(TOKENS, token_id) is None:
            raise NotFound(f"token {token_id!r} not found", code="token_not_found")
        self.store.delete(TOKENS, token_id)

    def discard(self, token_id: str) -> None:
        """Revoke a token if it still exists."""
        self.store.delete(TOKENS, token_id)

    def revoke_user(self, user_id: str, keep: str | None = None,
                    kinds: tuple[str, ...] = KINDS) -> int:
        """Revoke the user's tokens of ``kinds`` but ``keep``; returns how many."""
        with self.store.locked():
            doomed = [t["id"] for t in self.store.find(TOKENS, user=user_id)
                      if t["id"] != keep and t.get("kind") in kinds]
            for token_id in doomed:
                self.store.delete(TOKENS, token_id)
        return len(doomed)

    # -- start-up ------------------------------------------------------------------------
    def migrate(self) -> dict[str, int]:
        """Bring records of earlier versions up to date (see the module docstring) and
        drop expired ones; returns counts of what was done."""
        counts = {"deleted": 0, "upgraded": 0, "expired": 0}
        now = self.clock()
        with self.store.locked():
            for record in self.store.all(TOKENS):
                action = self._migrate_one(record, now)
                if action:
                    counts[action] += 1
        if counts["deleted"] or counts["upgraded"]:
            self.store.compact()  # no trace of the old records is left in the journal
            log.warning("tokens of an earlier version: %(deleted)d deleted (sessions and "
                        "login tokens sign in again), %(upgraded)d API tokens now expire in "
                        f"{API_DEFAULT_DAYS} days", counts)
        return counts

    def _migrate_one(self, record: dict[str, Any], now: float) -> str | None:
        digest = record.get("hash", "")
        unusable = (any(f in record for f in CLEAR_FIELDS) or not _HEX64.match(digest)
                    or record.get("id") != digest[:24])
        if record.get("v") == FORMAT and not unusable:
            if self._expired(record, now):
                self.store.delete(TOKENS, record["id"])
                return "expired"
            return None
        if unusable or record.get("kind") != "api":
            self.store.delete(TOKENS, record["id"])
            return "deleted"
        expires = record.get("expires") or now + API_DEFAULT_DAYS * 86400
        self.store.update(TOKENS, record["id"], {
            "v": FORMAT, "expires": min(expires, now + API_MAX_DAYS * 86400),
            "idle_timeout": None, "last_used": record.get("created", now),
            "scope": "full", "vms": None, "address": None})
        return "upgraded"
