"""What a user may have (quotas) and may do beyond their VMs (permissions).

A quota caps what a user's VMs take in total; a key that is missing means no limit. The
maxima keep stored numbers sane (a quota beyond them is refused as bad input, not stored).
Admins are never limited.

Permissions are off unless an admin turns them on for a user, as in VMmanager:
``add_recipes`` (add and edit their own recipes) and ``upload_isos`` (upload installer ISOs
as OS templates only they and admins see).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

QUOTA_MAXIMA: dict[str, int] = {
    "vms": 100_000,
    "vcpus": 1_000_000,
    "memory_mib": 1024**3,  # 1 EiB: far above any cluster, far below a float's precision
    "disk_gib": 1024**3,
    "ips": 1_000_000,
    "backups": 1_000_000,
    "snapshots": 1_000_000,
}
QUOTA_WORDS: dict[str, str] = {
    "vms": "VMs", "vcpus": "vCPUs", "memory_mib": "MiB of RAM", "disk_gib": "GiB of disk",
    "ips": "IP addresses", "backups": "backups", "snapshots": "snapshots",
}
PERMISSIONS: dict[str, str] = {
    "add_recipes": "may add recipes (their own, run on their VMs only)",
    "upload_isos": "may upload installer ISOs (OS templates only they and admins see)",
}


def is_admin(user: Mapping[str, Any] | None) -> bool:
    return bool(user and user.get("role") == "admin")


def allowed(user: Mapping[str, Any] | None, permission: str) -> bool:
    """Whether ``user`` has ``permission`` (admins have every one)."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    return is_admin(user) or bool(((user or {}).get("permissions") or {}).get(permission))


def limit(user: Mapping[str, Any] | None, key: str) -> int | None:
    """The user's quota for ``key`` (None: no limit; admins have none)."""
    if user is None or is_admin(user):
        return None
    value = (user.get("quota") or {}).get(key)
    return value if isinstance(value, int) else None


def exceeded(key: str, maximum: int) -> str:
    """The message of a quota refusal."""
    return f"quota exceeded: at most {maximum} {QUOTA_WORDS[key]}"
