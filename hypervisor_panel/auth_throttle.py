"""Login throttling per user name and per client address, kept in memory with a bound.

Each key (``user:NAME``, ``addr:ADDRESS``) counts its failed logins in a sliding window.
``max_failures`` failures within ``window`` seconds lock the key for ``lockout`` seconds,
doubled at every further lockout (up to ``max_lockout``); while a key is locked every
attempt is refused with :class:`TooManyAttempts` (HTTP 429 + ``Retry-After``) before the
password is even checked, so the right password does not get through either. A
successful login clears the user's key (not the address's: one valid account must not
let an address reset its own count while it guesses at others).

State lives in memory (it restarts empty with the panel) and holds at most
``max_entries`` keys: when full, idle keys go first, then the oldest.
IPv6 addresses are counted per /64, the block a single client usually holds.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .errors import PanelError


class TooManyAttempts(PanelError):
    """Too many failed logins: wait ``retry_after`` seconds (HTTP 429, ``Retry-After``)."""

    status, code = 429, "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-in attempts; try again in {retry_after} s",
                         details={"retry_after": retry_after})
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


@dataclass
class _Entry:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0
    strikes: int = 0
    last: float = 0.0


@dataclass
class Limit:
    max_failures: int
    window: float


def address_key(address: str | None) -> str | None:
    """The throttling key of a client address (IPv6: its /64), or None when unknown."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"addr:{address[:64]}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return f"addr:{ip.ipv4_mapped}"
        return f"addr:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"addr:{ip}"


class LoginThrottle:
    """Failure counts and lockouts (see the module docstring). Thread-safe.

    Every setting is a plain attribute, so a test (or an operator) may change it.
    """

    def __init__(self, *, max_failures: int = 5, address_max_failures: int = 20,
                 window: float = 300.0, lockout: float = 300.0, max_lockout: float = 3600.0,
                 max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.user_limit = Limit(max_failures, window)
        self.address_limit = Limit(address_max_failures, window)
        self.lockout, self.max_lockout = lockout, max_lockout
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def window(self) -> float:
        return self.user_limit.window

    @window.setter
    def window(self, seconds: float) -> None:
        self.user_limit.window = self.address_limit.window = seconds

    @staticmethod
    def keys(name: str, address: str | None) -> list[str]:
        keys = [f"user:{name.strip().lower()[:64]}"]
        addr = address_key(address)
        return keys + [addr] if addr else keys

    def check(self, keys: Iterable[str]) -> None:
        """Raise TooManyAttempts when any of ``keys`` is locked."""
        now = self.clock()
        with self._lock:
            waits = [e.locked_until - now for k in keys
                     if (e := self._entries.get(k)) and e.locked_until > now]
        if waits:
            raise TooManyAttempts(max(1, math.ceil(max(waits))))

    def failure(self, keys: Iterable[str]) -> None:
        """Count one failed login against every key; lock those over their limit."""
        now = self.clock()
        with self._lock:
            for key in keys:
                limit = self.address_limit if key.startswith("addr:") else self.user_limit
                entry = self._entry(key, now)
                if now - entry.last > self.max_lockout:
                    entry.strikes = 0  # a long quiet spell forgives earlier lockouts
                entry.last = now
                entry.failures = [t for t in entry.failures if now - t < limit.window]
                entry.failures.append(now)
                if len(entry.failures) >= limit.max_failures:
                    entry.strikes += 1
                    entry.failures = []
                    entry.locked_until = now + min(self.lockout * 2 ** (entry.strikes - 1),
                                                   self.max_lockout)

    def success(self, name: str) -> None:
        """A successful login clears the user's failures and lockouts."""
        with self._lock:
            self._entries.pop(self.keys(name, None)[0], None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, key: str, now: float) -> _Entry:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        if len(self._entries) >= self.max_entries:
            self._evict(now)
        entry = self._entries[key] = _Entry()
        return entry

    def _evict(self, now: float) -> None:
        """Drop idle keys (not locked, no failure in the window); else the oldest one."""
        idle = [k for k, e in self._entries.items() if e.locked_until <= now
                and now - e.last >= max(self.user_limit.window, self.address_limit.window)]
        for key in idle:
            del self._entries[key]
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
