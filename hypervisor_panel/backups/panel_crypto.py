"""Passphrase encryption of panel backups: scrypt, then AES-256-GCM in chunks.

* Key: ``scrypt(passphrase, salt, N=2**17, r=8, p=1)`` (OWASP's minimum), 64 bytes: the
  first 32 are the AES-256-GCM key, the SHA-256 of the last 32 is stored as ``key_check``
  so a wrong passphrase is told apart from a damaged archive. Salt (16 random bytes) and
  parameters are in the archive header; a fresh salt gives every archive its own key.
* Body: the compressed stream cut in chunks of ``chunk_size`` bytes (the last one shorter,
  possibly empty). Each is stored as a 4-byte big-endian word (bit 31: last chunk; the rest:
  the ciphertext length) and the ciphertext with its 16-byte tag. The nonce is
  ``3 zero bytes | last flag | 8-byte chunk index`` and the associated data is the SHA-256
  of the header's JSON, so a reordered, dropped, duplicated or appended chunk, a truncated
  archive or a changed header fails authentication (STREAM construction).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .panel_format import ArchiveDamaged, PanelBackupError, WrongPassphrase, read_exact

CIPHER = "AES-256-GCM"
CHUNK_SIZE = 1 << 20
TAG = 16
LAST = 0x80000000
KDF = {"name": "scrypt", "n": 2 ** 17, "r": 8, "p": 1, "dklen": 64}
_MAX_MEMORY = 1 << 30  # refuse headers asking scrypt for more (128 * n * r bytes)


def new_encryption(passphrase: str) -> tuple[dict[str, Any], bytes]:
    """(the header's ``encryption`` object, the AES key) for a new archive."""
    params = {**KDF, "salt": base64.b64encode(os.urandom(16)).decode()}
    key, check = derive(passphrase, params)
    return {"cipher": CIPHER, "chunk_size": CHUNK_SIZE, "kdf": params, "key_check": check}, key


def _check_params(params: Any) -> tuple[bytes, int, int, int]:
    try:
        salt = base64.b64decode(params["salt"], validate=True)
        n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
        ok = params["name"] == "scrypt" and params["dklen"] == 64 and len(salt) >= 16
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok or n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or \
            128 * n * r > _MAX_MEMORY:
        raise ArchiveDamaged("the archive's key derivation parameters are invalid")
    return salt, n, r, p


def derive(passphrase: str, params: dict[str, Any]) -> tuple[bytes, str]:
    """(AES key, key check) from a passphrase and the header's scrypt parameters."""
    if not passphrase:
        raise PanelBackupError("the passphrase is empty")
    salt, n, r, p = _check_params(params)
    raw = hashlib.scrypt(passphrase.encode(), salt=salt, n=n, r=r, p=p, dklen=64,
                         maxmem=2 * 128 * n * r + (1 << 20))
    return raw[:32], hashlib.sha256(raw[32:]).hexdigest()


def open_key(passphrase: str, encryption: Any) -> bytes:
    """The AES key of an archive's ``encryption`` header, or :class:`WrongPassphrase`."""
    if not isinstance(encryption, dict) or encryption.get("cipher") != CIPHER or \
            encryption.get("chunk_size") != CHUNK_SIZE:
        raise ArchiveDamaged("the archive's encryption header is invalid")
    key, check = derive(passphrase, encryption.get("kdf"))
    if not hmac.compare_digest(check, str(encryption.get("key_check", ""))):
        raise WrongPassphrase("wrong passphrase: it does not open this encrypted archive")
    return key


def _nonce(index: int, last: bool) -> bytes:
    return b"\0\0\0" + (b"\1" if last else b"\0") + struct.pack(">Q", index)


class EncryptingSink:
    """A write-only stream that seals what it is given in chunks and passes them to ``out``."""

    def __init__(self, out: Callable[[bytes], Any], key: bytes, header_raw: bytes) -> None:
        self._out, self._aead = out, AESGCM(key)
        self._aad = hashlib.sha256(header_raw).digest()
        self._buf = bytearray()
        self._index = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) > CHUNK_SIZE:  # keep one back: only close() knows the last one
            self._seal(bytes(self._buf[:CHUNK_SIZE]), last=False)
            del self._buf[:CHUNK_SIZE]
        return len(data)

    def flush(self) -> None:
        """Nothing to do: chunks go out when full (and the last one at close)."""

    def _seal(self, plain: bytes, last: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._index, last), plain, self._aad)
        self._out(struct.pack(">I", len(sealed) | (LAST if last else 0)) + sealed)
        self._index += 1

    def close(self) -> None:
        """Seal what is left as the last chunk (possibly empty)."""
        if not self.closed:
            self._seal(bytes(self._buf), last=True)
            self._buf.clear()
            self.closed = True


class DecryptingReader:
    """A read-only stream of the plaintext of an encrypted body; every chunk authenticated."""

    def __init__(self, raw: BinaryIO, key: bytes, header_raw: bytes) -> None:
        self._raw, self._aead = raw, AESGCM(key)
        self._aad = hashlib.sha256(header_raw).digest()
        self._buf = b""
        self._index = 0
        self.finished = False

    def _next(self) -> None:
        (word,) = struct.unpack(">I", read_exact(self._raw, 4, "encrypted body"))
        last, length = bool(word & LAST), word & ~LAST
        if not TAG <= length <= CHUNK_SIZE + TAG:
            raise ArchiveDamaged(f"encrypted chunk {self._index} has an invalid length")
        sealed = read_exact(self._raw, length, "encrypted body")
        try:
            self._buf = self._aead.decrypt(_nonce(self._index, last), sealed, self._aad)
        except InvalidTag:
            raise ArchiveDamaged(f"encrypted chunk {self._index} fails authentication: the "
                                 "archive was tampered with, reordered or damaged") from None
        if not last and len(self._buf) != CHUNK_SIZE:
            raise ArchiveDamaged(f"encrypted chunk {self._index} is short")
        self._index += 1
        if last:
            if self._raw.read(1):
                raise ArchiveDamaged("the archive has data after its last encrypted chunk")
            self.finished = True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all when negative); b"" only after the authenticated end."""
        while not self._buf and not self.finished:
            self._next()
        if size is None or size < 0:
            parts = [self._buf]
            while not self.finished:
                self._next()
                parts.append(self._buf)
            self._buf = b""
            return b"".join(parts)
        out, self._buf = self._buf[:size], self._buf[size:]
        return out
