"""Which backups a schedule keeps: Proxmox's ``keep-*`` rules, aware of incremental chains.

Rules (each optional, applied together; a backup kept by any rule stays):
``keep_last`` N newest; ``keep_hourly`` / ``keep_daily`` / ``keep_weekly`` /
``keep_monthly`` / ``keep_yearly`` N: the newest backup of each of the last N periods that
have one. With no rule at all everything is kept. An incremental needs its whole chain, so
every ancestor of a kept backup is kept too (a full is removed only with all its
incrementals). Periods are in UTC.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
         "keep_yearly")
SCHEMA = {"type": "object", "additionalProperties": False,
          "description": "Proxmox-style retention; no rule keeps everything",
          "properties": {rule: {"type": "integer", "minimum": 0, "maximum": 100_000}
                         for rule in RULES}}

_PERIODS: dict[str, Callable[[time.struct_time], tuple[int, ...]]] = {
    "keep_hourly": lambda t: (t.tm_year, t.tm_yday, t.tm_hour),
    "keep_daily": lambda t: (t.tm_year, t.tm_yday),
    "keep_weekly": lambda t: tuple(_iso_week(t)),
    "keep_monthly": lambda t: (t.tm_year, t.tm_mon),
    "keep_yearly": lambda t: (t.tm_year,),
}


def _iso_week(t: time.struct_time) -> tuple[int, int]:
    import datetime

    year, week, _ = datetime.date(t.tm_year, t.tm_mon, t.tm_mday).isocalendar()
    return year, week


def to_keep(backups: Iterable[dict[str, Any]], rules: dict[str, int]) -> set[str]:
    """Ids of ``backups`` (``id``, ``created``, optional ``parent``) that the rules keep."""
    items = sorted(backups, key=lambda b: b["created"], reverse=True)
    if not any(rules.get(rule) for rule in RULES):
        return {b["id"] for b in items}
    kept: set[str] = {b["id"] for b in items[:rules.get("keep_last", 0)]}
    for rule, period in _PERIODS.items():
        wanted = rules.get(rule, 0)
        seen: set[tuple[int, ...]] = set()
        for backup in items:
            if len(seen) >= wanted:
                break
            key = period(time.gmtime(backup["created"]))
            if key not in seen:
                seen.add(key)
                kept.add(backup["id"])
    return _with_ancestors(kept, {b["id"]: b for b in items})


def _with_ancestors(kept: set[str], by_id: dict[str, dict[str, Any]]) -> set[str]:
    out = set(kept)
    for backup_id in kept:
        parent = by_id.get(backup_id, {}).get("parent")
        while parent and parent in by_id and parent not in out:
            out.add(parent)
            parent = by_id[parent].get("parent")
    return out


def to_remove(backups: Iterable[dict[str, Any]], rules: dict[str, int]) -> list[str]:
    """Ids to delete, children before their parents (so a chain is never left broken)."""
    items = list(backups)
    keep = to_keep(items, rules)
    doomed = [b for b in items if b["id"] not in keep]
    return [b["id"] for b in sorted(doomed, key=lambda b: b["created"], reverse=True)]
