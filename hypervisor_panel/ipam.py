"""Address arithmetic of IP pools: pure, no store (unit-tested on its own).

A pool is a subnet, optionally narrowed to a range, minus exclusions and its gateway.
:class:`PoolIndex` finds a free address without scanning the pool: a cursor moves on
from the last address handed out, so a pool filled in order costs O(1) per allocation,
and a count of free addresses answers "exhausted" at once.
"""

from __future__ import annotations

import bisect
import ipaddress
from dataclasses import dataclass, field
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PoolError(ValueError):
    """A pool definition that does not make sense (the message says why)."""


def parse_address(text: str, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise PoolError(f"{what} {text!r} is not an IP address") from None


def parse_subnet(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise PoolError(f"subnet {text!r} is not a valid CIDR network: {exc}") from None


def _interval(text: str, subnet: IPNetwork) -> tuple[int, int]:
    """An exclusion: one address or ``first-last``, inside the subnet."""
    first_text, _, last_text = text.partition("-")
    first = parse_address(first_text.strip(), "exclusion")
    last = parse_address(last_text.strip(), "exclusion") if last_text else first
    if first.version != subnet.version or last.version != subnet.version:
        raise PoolError(f"exclusion {text!r} is not IPv{subnet.version}")
    if first not in subnet or last not in subnet:
        raise PoolError(f"exclusion {text!r} is outside {subnet}")
    if int(last) < int(first):
        raise PoolError(f"exclusion {text!r} ends before it starts")
    return int(first), int(last)


@dataclass(frozen=True)
class PoolSpace:
    """The addresses a pool may hand out."""

    subnet: IPNetwork
    first: int
    last: int
    gateway: int | None
    excluded: tuple[tuple[int, int], ...]  # sorted, merged intervals

    @classmethod
    def from_record(cls, pool: dict[str, Any]) -> PoolSpace:
        """Parse and check a pool record (raises PoolError with the reason)."""
        subnet = parse_subnet(pool["subnet"])
        hosts_first, hosts_last = int(subnet.network_address), int(subnet.broadcast_address)
        if subnet.version == 4 and subnet.prefixlen < 31:
            hosts_first, hosts_last = hosts_first + 1, hosts_last - 1  # network, broadcast
        elif subnet.version == 6 and subnet.prefixlen < 127:
            hosts_first += 1  # the subnet-router anycast address
        first, last = hosts_first, hosts_last
        if pool.get("range"):
            start = parse_address(pool["range"]["start"], "range start")
            end = parse_address(pool["range"]["end"], "range end")
            if start not in subnet or end not in subnet:
                raise PoolError(f"range {start}-{end} is not inside {subnet}")
            if int(end) < int(start):
                raise PoolError(f"range {start}-{end} is reversed (it ends before it starts)")
            first, last = max(first, int(start)), min(last, int(end))
        gateway = None
        if pool.get("gateway"):
            gw = parse_address(pool["gateway"], "gateway")
            if gw not in subnet or not hosts_first <= int(gw) <= hosts_last:
                raise PoolError(f"gateway {gw} is not a host address of {subnet}")
            gateway = int(gw)
        excluded = _merge([_interval(e, subnet) for e in pool.get("exclude", [])])
        return cls(subnet, first, last, gateway, excluded)

    @property
    def version(self) -> int:
        return self.subnet.version

    def _excluded(self, value: int) -> bool:
        i = bisect.bisect_right(self.excluded, (value, float("inf"))) - 1
        return i >= 0 and self.excluded[i][0] <= value <= self.excluded[i][1]

    def allowed(self, value: int) -> bool:
        """Whether the pool may hand out this address (in range, not excluded or the
        gateway)."""
        return self.first <= value <= self.last and value != self.gateway \
            and not self._excluded(value)

    def size(self) -> int:
        total = self.last - self.first + 1
        for a, b in self.excluded:
            total -= max(0, min(b, self.last) - max(a, self.first) + 1)
        if self.gateway is not None and self.first <= self.gateway <= self.last \
                and not self._excluded(self.gateway):
            total -= 1
        return total

    def overlaps(self, other: PoolSpace) -> bool:
        return self.version == other.version and self.first <= other.last \
            and other.first <= self.last

    def address(self, value: int) -> str:
        return str(ipaddress.ip_address(value))


def _merge(intervals: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return tuple(merged)


@dataclass
class PoolIndex:
    """The taken addresses of one pool and where to look for the next free one."""

    space: PoolSpace
    taken: set[int] = field(default_factory=set)
    cursor: int = 0
    _taken_allowed: int = 0  # how many taken addresses the pool could hand out

    def __post_init__(self) -> None:
        self.cursor = self.cursor or self.space.first
        self._size = self.space.size()
        self._taken_allowed = sum(1 for v in self.taken if self.space.allowed(v))

    def free(self) -> int:
        return self._size - self._taken_allowed

    def next_free(self) -> int | None:
        """A free address (None: the pool is exhausted)."""
        if self.free() <= 0:
            return None
        span = self.space.last - self.space.first + 1
        start = self.cursor - self.space.first
        for step in range(span):
            value = self.space.first + (start + step) % span
            if value not in self.taken and self.space.allowed(value):
                return value
        return None

    def take(self, value: int) -> None:
        if value not in self.taken:
            self.taken.add(value)
            self._taken_allowed += self.space.allowed(value)
        self.cursor = value + 1 if value < self.space.last else self.space.first

    def give_back(self, value: int) -> None:
        if value in self.taken:
            self.taken.discard(value)
            self._taken_allowed -= self.space.allowed(value)
