"""Backup schedules (owner of ``backup_schedules``): when to back up what, kept by APScheduler.

A schedule has a cron expression (5 fields, UTC) or an interval, a selection of VMs (all,
listed, by tag, by node) and/or the panel, a target, a full/incremental policy
(``full_every``: a full backup after that many incrementals; 0 = always full), retention
(:mod:`.retention`) and a missed-run policy. The APScheduler jobs are rebuilt from the store
at every start; a run missed while the panel was down runs once at start (``missed:
"run_once"``) or is skipped with an event (``"skip"``). Two runs of one schedule never
overlap: a fire while the previous run's task is still going is skipped (and logged as an
event). ``run`` (given by the panel) turns a schedule into a task.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ..errors import Conflict, Invalid, NotFound
from ..events import EventLog
from ..references import References
from ..store import Store
from ..tasks import TaskManager
from ..validation import ID, NAME
from . import retention

log = logging.getLogger(__name__)
TABLE = "backup_schedules"
UTC = dt.UTC
FINAL = ("succeeded", "failed", "cancelled", "interrupted")

SELECTION = {
    "type": "object", "additionalProperties": False, "required": ["mode"],
    "description": "which VMs: all, listed (ids), by tag, or by node",
    "properties": {"mode": {"enum": ["all", "list", "tags", "nodes", "none"]},
                   "ids": {"type": "array", "maxItems": 1000, "items": ID},
                   "tags": {"type": "array", "maxItems": 50,
                            "items": {"type": "string", "maxLength": 64}},
                   "nodes": {"type": "array", "maxItems": 100, "items": ID}}}
FIELDS: dict[str, Any] = {
    "cron": {"type": "string", "maxLength": 100,
             "description": "minute hour day month weekday (UTC), e.g. '30 2 * * *'"},
    "interval_minutes": {"type": "integer", "minimum": 1, "maximum": 525_600},
    "vms": SELECTION,
    "panel": {"type": "boolean", "description": "also back up the panel itself"},
    "target": ID,
    "full_every": {"type": "integer", "minimum": 0, "maximum": 1000,
                   "description": "a full backup after this many incrementals (0: always full)"},
    "retention": retention.SCHEMA,
    "missed": {"enum": ["run_once", "skip"],
               "description": "a run missed while the panel was down: run once at start, or skip"},
    "paused": {"type": "boolean"},
    "passphrase": {"type": "string", "minLength": 8, "maxLength": 1024, "writeOnly": True,
                   "description": "encrypt the panel's backups with this passphrase"},
    "description": {"type": "string", "maxLength": 500},
}
CREATE_SCHEMA = {"type": "object", "additionalProperties": False,
                 "required": ["name", "target"],
                 "oneOf": [{"required": ["cron"]}, {"required": ["interval_minutes"]}],
                 "properties": {"name": NAME, **FIELDS}}
PATCH_SCHEMA = {"type": "object", "additionalProperties": False, "minProperties": 1,
                "not": {"required": ["cron", "interval_minutes"]},
                "properties": FIELDS}
DEFAULTS = {"vms": {"mode": "all"}, "panel": False, "full_every": 6, "retention": {},
            "missed": "run_once", "paused": False, "description": ""}


def trigger_for(schedule: dict[str, Any]) -> CronTrigger | IntervalTrigger:
    """The APScheduler trigger of a schedule (a clear 422 for a bad cron expression, an
    empty one included, or for neither cron nor interval_minutes)."""
    if schedule.get("cron") is not None:
        try:
            return CronTrigger.from_crontab(schedule["cron"], timezone=UTC)
        except ValueError as exc:
            raise Invalid(f"bad cron expression {schedule['cron']!r}: {exc}",
                          code="bad_cron") from None
    if schedule.get("interval_minutes") is None:
        raise Invalid("give cron or interval_minutes", code="bad_schedule")
    start = dt.datetime.fromtimestamp(schedule.get("created", time.time()), UTC)
    return IntervalTrigger(minutes=schedule["interval_minutes"], start_date=start, timezone=UTC)


class ScheduleService:
    """Stores schedules and keeps one APScheduler job per active schedule."""

    def __init__(self, store: Store, tasks: TaskManager, events: EventLog,
                 references: References) -> None:
        self.store = store
        self.tasks = tasks
        self.events = events
        self.run: Callable[[dict[str, Any], str], dict[str, Any]] | None = None
        self.check_target: Callable[[str], Any] = lambda target_id: None
        self.scheduler = BackgroundScheduler(timezone=UTC, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 300})
        self._lock = threading.Lock()
        references.register("backup_target", self._using_target, "backup schedule")

    # -- records -----------------------------------------------------------------------
    def require(self, schedule_id: str) -> dict[str, Any]:
        schedule = self.store.get(TABLE, schedule_id)
        if schedule is None:
            raise NotFound(f"backup schedule {schedule_id!r} not found",
                           code="backup_schedule_not_found")
        return schedule

    def all(self) -> list[dict[str, Any]]:
        return self.store.all(TABLE)

    def public(self, schedule: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in schedule.items() if k != "passphrase"}
        out["encrypted"] = bool(schedule.get("passphrase"))
        job = self.scheduler.get_job(schedule["id"]) if self.scheduler.running else None
        out["next_run"] = job.next_run_time.timestamp() if job and job.next_run_time else None
        return out

    def create(self, data: dict[str, Any], actor: str | None = None) -> dict[str, Any]:
        record = {**DEFAULTS, **data, "created": time.time(), "last_run": None,
                  "last_fire": None, "last_task": None}
        trigger_for(record)
        self.check_target(record["target"])
        with self.store.locked():
            if self.store.find_one(TABLE, name=data["name"]):
                raise Conflict(f"backup schedule {data['name']!r} already exists",
                               code="already_exists")
            stored = self.store.insert(TABLE, record)
        self._plan(stored)
        self.events.emit("backup_schedule.create", stored["id"], actor=actor,
                         name=stored["name"])
        return stored

    def update(self, schedule_id: str, data: dict[str, Any], actor: str | None = None
               ) -> dict[str, Any]:
        current = self.require(schedule_id)
        fields = dict(data)
        if "cron" in data:
            fields["interval_minutes"] = None
        if "interval_minutes" in data:
            fields["cron"] = None
        trigger_for({**current, **fields})
        if "target" in data:
            self.check_target(data["target"])
        stored = self.store.update(TABLE, schedule_id, fields)
        self._plan(stored)
        self.events.emit("backup_schedule.update", schedule_id, actor=actor,
                         name=stored["name"], fields=sorted(data))
        return stored

    def delete(self, schedule_id: str, actor: str | None = None) -> None:
        schedule = self.require(schedule_id)
        self._unplan(schedule_id)
        self.store.delete(TABLE, schedule_id)
        self.events.emit("backup_schedule.delete", schedule_id, actor=actor,
                         name=schedule["name"])

    # -- running -----------------------------------------------------------------------
    def start(self) -> None:
        """Rebuild the jobs from the store and handle runs missed while the panel was down."""
        self.scheduler.start()
        now = dt.datetime.now(UTC)
        for schedule in self.all():
            self._plan(schedule)
            if not schedule.get("paused") and self._missed(schedule, now):
                if schedule.get("missed", "run_once") == "run_once":
                    self.fire(schedule["id"], "missed")
                else:
                    self.events.emit("backup_schedule.missed", schedule["id"],
                                     name=schedule["name"], policy="skip")

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def run_now(self, schedule_id: str, actor: str | None = None) -> dict[str, Any]:
        task = self.fire(schedule_id, "manual", actor=actor)
        if task is None:
            raise Conflict("the previous run of this schedule is still going",
                           code="schedule_running")
        return task

    def fire(self, schedule_id: str, reason: str = "scheduled",
             actor: str | None = None) -> dict[str, Any] | None:
        """Start one run unless the previous one is still going (then skip, with an event)."""
        with self._lock:
            schedule = self.store.get(TABLE, schedule_id)
            if schedule is None or self.run is None:
                return None
            last = self._task(schedule.get("last_task"))
            if last is not None and last["state"] not in FINAL:
                self.events.emit("backup_schedule.skipped", schedule_id, name=schedule["name"],
                                 reason="the previous run is still going", running=last["id"])
                return None
            task = self.run(schedule, reason)
            now = time.time()
            self.store.update(TABLE, schedule_id, {"last_task": task["id"], "last_run": now,
                                                    "last_fire": now})
        self.events.emit("backup_schedule.run", schedule_id, actor=actor, name=schedule["name"],
                         reason=reason, task=task["id"])
        return task

    # -- helpers -----------------------------------------------------------------------
    def _plan(self, schedule: dict[str, Any]) -> None:
        self._unplan(schedule["id"])
        if schedule.get("paused") or not self.scheduler.running:
            return
        self.scheduler.add_job(self.fire, trigger_for(schedule), args=[schedule["id"]],
                               id=schedule["id"], name=schedule["name"],
                               replace_existing=True)

    def _unplan(self, schedule_id: str) -> None:
        if self.scheduler.running and self.scheduler.get_job(schedule_id):
            self.scheduler.remove_job(schedule_id)

    @staticmethod
    def _missed(schedule: dict[str, Any], now: dt.datetime) -> bool:
        since = schedule.get("last_fire") or schedule.get("created")
        if since is None:
            return False
        previous = dt.datetime.fromtimestamp(since, UTC)
        due = trigger_for(schedule).get_next_fire_time(None, previous + dt.timedelta(seconds=1))
        return due is not None and due < now - dt.timedelta(seconds=5)

    def _task(self, task_id: str | None) -> dict[str, Any] | None:
        try:
            return self.tasks.get(task_id) if task_id else None
        except NotFound:
            return None

    def _using_target(self, target_id: str) -> list[str]:
        return [s["name"] for s in self.all() if s.get("target") == target_id]
