"""Password hashing: argon2id (argon2-cffi) with its parameters in the hash.

New hashes are PHC strings (``$argon2id$v=19$m=19456,t=2,p=1$salt$digest``), so a change
of :data:`ARGON2_PARAMETERS` is seen on the next login (:func:`needs_rehash`) and the hash
is upgraded then. Hashes of earlier versions (``scrypt$salt$digest``, scrypt n=2**14, r=8,
p=1) still verify and are always reported as needing a rehash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: OWASP's baseline argon2id configuration (19 MiB, 2 iterations, 1 lane): about 25 ms
#: per hash on one core. Raising any of these rehashes every password at its next login.
ARGON2_PARAMETERS = {"time_cost": 2, "memory_cost": 19456, "parallelism": 1,
                     "hash_len": 32, "salt_len": 16}
_LEGACY_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}

_hasher = PasswordHasher(**ARGON2_PARAMETERS)


def hash_password(password: str) -> str:
    """A new argon2id hash of ``password`` (PHC string: parameters included)."""
    return _hasher.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (argon2 or the legacy scrypt scheme)."""
    if stored.startswith("scrypt$"):
        return _verify_legacy_scrypt(password, stored)
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True when ``stored`` is not an argon2id hash with today's parameters."""
    if not stored.startswith("$argon2id$"):
        return True
    try:
        return _hasher.check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True


def legacy_scrypt_hash(password: str) -> str:
    """A hash as versions before argon2 made it (kept for the upgrade tests)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_LEGACY_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def _verify_legacy_scrypt(password: str, stored: str) -> bool:
    try:
        _scheme, salt_hex, digest_hex = stored.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    digest = hashlib.scrypt(password.encode(), salt=salt, **_LEGACY_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)
