"""Where a new VM goes and whether its owner may have it: pure functions, no libvirt.

Placement picks the node with the most memory left, where memory left is the node's RAM
times the cluster's overcommit ratio minus the RAM of the VMs already placed there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..limits import exceeded

QUOTA_KEYS = ("vms", "vcpus", "memory_mib", "disk_gib")


@dataclass(frozen=True)
class NodeRoom:
    """A candidate node: its RAM and the RAM its VMs were promised."""

    node_id: str
    memory_mib: int
    placed_mib: int = 0

    def left(self, ratio: float) -> int:
        return int(self.memory_mib * ratio) - self.placed_mib


def choose_node(rooms: Iterable[NodeRoom], need_mib: int, ratio: float) -> str | None:
    """The node with the most memory left that still fits ``need_mib`` (None: none fits).

    Ties go to the first candidate, so the order of ``rooms`` is the tie-break.
    """
    best: NodeRoom | None = None
    for room in rooms:
        if room.left(ratio) >= need_mib and (best is None or room.left(ratio) > best.left(ratio)):
            best = room
    return best.node_id if best else None


@dataclass(frozen=True)
class Usage:
    """What a user's VMs take (or what one more VM would add)."""

    vms: int = 0
    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.vms + other.vms, self.vcpus + other.vcpus,
                     self.memory_mib + other.memory_mib, self.disk_gib + other.disk_gib)


def usage_of(vms: Iterable[Mapping[str, int]]) -> Usage:
    """The sum over VM records (each counts as one VM)."""
    total = Usage()
    for vm in vms:
        total += Usage(1, vm.get("vcpus", 0), vm.get("memory_mib", 0), vm.get("disk_gib", 0))
    return total


def quota_problem(quota: Mapping[str, int], used: Usage, extra: Usage) -> str | None:
    """Why ``extra`` does not fit in ``quota`` given ``used`` (None: it fits)."""
    after = used + extra
    for key in QUOTA_KEYS:
        if key in quota and getattr(after, key) > quota[key]:
            return exceeded(key, quota[key])
    return None
