"""Backup routes: targets, backups (take, verify, restore, download, delete), schedules.

Only admins take, restore, verify, download or delete backups and manage targets and
schedules; users list the backups of their own VMs.
"""

from __future__ import annotations

from typing import Any

from ..backup import ARCHIVE_NAME
from ..backups.restoring import RESTORE_SCHEMA
from ..backups.schedules import CREATE_SCHEMA as SCHEDULE_CREATE
from ..backups.schedules import PATCH_SCHEMA as SCHEDULE_PATCH
from ..backups.targets import PATCH_SCHEMA as TARGET_PATCH
from ..host import PanelHost
from ..routes import ApiRequest, Query, RouteTable, Stream, accepted, created
from . import schemas as s

TAGS = ("backups",)
ID = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"}
MODE = {"enum": ["auto", "full", "incremental"],
        "description": "auto: incremental on the last backup on this target when there is "
                       "one (a full one every full_every), full, or incremental"}
VM_BACKUP = {"type": "object", "additionalProperties": False, "required": ["target"],
             "properties": {"target": ID, "mode": MODE,
                            "full_every": {"type": "integer", "minimum": 0, "maximum": 1000}}}
PANEL_BACKUP = {"type": "object", "additionalProperties": False, "required": ["target"],
                "properties": {"target": ID,
                               "passphrase": {"type": "string", "minLength": 8,
                                              "maxLength": 1024, "writeOnly": True}}}
VERIFY = {"type": "object", "additionalProperties": False,
          "properties": {"passphrase": {"type": "string", "maxLength": 1024,
                                        "writeOnly": True}}}
PANEL_RESTORE = {"type": "object", "additionalProperties": False, "required": ["archive"],
                 "properties": {"archive": {"type": "string", "pattern": ARCHIVE_NAME},
                                "passphrase": {"type": "string", "maxLength": 1024,
                                               "writeOnly": True}}}
OBJECT = {"type": "object"}
STRING, INTEGER = {"type": "string"}, {"type": "integer"}
TARGET_KIND = s.obj(["id", "name", "options_schema"], id=s.ID, name=STRING,
                    description=STRING, resumable={"type": "boolean"}, options_schema=OBJECT)
TARGET = s.obj(["id", "name", "backend", "options", "secrets_set"], id=s.ID, name=STRING,
               backend=STRING, options=OBJECT, description=STRING, created=s.TIME,
               secrets_set={"type": "array", "items": STRING})
ARCHIVE = s.obj(["name", "size"], name=STRING, size=INTEGER, mtime=s.TIME, kind=STRING,
                backup=s.NULLABLE_STRING)
BACKUP = s.obj(["id", "name", "kind", "target", "created"], id=s.ID, name=STRING,
               kind={"enum": ["vm", "panel"]}, vm=s.NULLABLE_STRING, target=s.ID,
               target_name=STRING, archive=STRING, size=INTEGER, type=STRING,
               parent=s.NULLABLE_STRING, encrypted={"type": "boolean"},
               schedule=s.NULLABLE_STRING, created=s.TIME, verified={"type": "boolean"})
SCHEDULE = s.obj(["id", "name", "target", "encrypted", "next_run"], id=s.ID, name=STRING,
                 target=s.ID, cron=s.NULLABLE_STRING,
                 interval_minutes={"type": ["integer", "null"]}, paused={"type": "boolean"},
                 encrypted={"type": "boolean"}, next_run={"type": ["number", "null"]},
                 last_run={"type": ["number", "null"]}, created=s.TIME)
FILTERS = [Query("vm", ID, "only this VM's backups"),
           Query("target", ID, "only backups on this target"),
           Query("kind", {"enum": ["vm", "panel"]}, "vm or panel backups")]


def declare(api: RouteTable, panel: PanelHost) -> None:
    _declare_targets(api, panel)
    _declare_backups(api, panel)
    _declare_schedules(api, panel)


def _declare_targets(api: RouteTable, panel: PanelHost) -> None:
    targets = panel.backup_targets

    @api.route("/backup-target-kinds", summary="Registered backup targets and their option "
               "schemas", role="admin", tags=TAGS, response=s.items(TARGET_KIND))
    def list_target_kinds(req: ApiRequest) -> dict[str, Any]:
        return {"items": targets.kinds()}

    @api.route("/backup-targets", summary="Backup targets (secrets never shown)",
               role="admin", tags=TAGS, response=s.items(TARGET))
    def list_targets(req: ApiRequest) -> dict[str, Any]:
        return {"items": [targets.public(t) for t in targets.all()]}

    @api.route("/backup-targets", "POST", summary="Add a backup target (checked first: "
               "connect, log in, write a probe)", role="admin", body=targets.create_schema,
               status=201, response=TARGET, tags=TAGS, errors=(409,))
    def create_target(req: ApiRequest):
        return created(targets.public(targets.create(req.body, req.user["id"])))

    @api.route("/backup-targets/{target_id}", summary="One backup target", role="admin",
               tags=TAGS, response=TARGET)
    def get_target(req: ApiRequest, target_id: str) -> dict[str, Any]:
        return targets.public(targets.require(target_id))

    @api.route("/backup-targets/{target_id}", "PATCH", summary="Change a target (checked "
               "again; secrets left out keep their value)", role="admin", body=TARGET_PATCH,
               response=TARGET, tags=TAGS)
    def patch_target(req: ApiRequest, target_id: str) -> dict[str, Any]:
        return targets.public(targets.update(target_id, req.body, req.user["id"]))

    @api.route("/backup-targets/{target_id}", "DELETE", summary="Remove a target that holds "
               "no backups and no schedule uses", role="admin", tags=TAGS, errors=(409,))
    def delete_target(req: ApiRequest, target_id: str) -> None:
        targets.delete(target_id, req.user["id"])

    @api.route("/backup-targets/{target_id}/archives", summary="What the target holds "
               "(also archives this panel has no record of)", role="admin", tags=TAGS,
               response=s.items(ARCHIVE))
    def browse_target(req: ApiRequest, target_id: str) -> dict[str, Any]:
        return {"items": panel.backups.browse(target_id)}

    @api.route("/backup-targets/{target_id}/actions/restore-panel", "POST", summary="Restore "
               "the panel from an archive on this target; applied at the next start (202)",
               role="admin", body=PANEL_RESTORE, status=202, response=s.ACCEPTED, tags=TAGS)
    def restore_panel(req: ApiRequest, target_id: str):
        return accepted(panel.backup_restorer.restore_panel(
            target_id, req.body["archive"], req.body.get("passphrase"), req.user))

    @api.route("/backup-targets/{target_id}/actions/check", "POST", summary="Check a target "
               "now (reachable, writable, free space)", role="admin", body=s.EMPTY_BODY,
               response=OBJECT, tags=TAGS)
    def check_target(req: ApiRequest, target_id: str) -> dict[str, Any]:
        return targets.check(target_id)


def _declare_backups(api: RouteTable, panel: PanelHost) -> None:
    backups, taker, restorer = panel.backups, panel.backup_taker, panel.backup_restorer

    @api.route("/backups", summary="Backups, newest first (users: their VMs' backups)",
               tags=TAGS, query=FILTERS, response=s.items(BACKUP))
    def list_backups(req: ApiRequest) -> dict[str, Any]:
        found = backups.listing(req.user, req.query.get("vm"), req.query.get("target"),
                                req.query.get("kind"))
        return {"items": [backups.public(b, req.user) for b in found]}

    @api.route("/backups", "POST", summary="Back up the panel itself (202 + task)",
               role="admin", body=PANEL_BACKUP, status=202, response=s.ACCEPTED, tags=TAGS,
               errors=(404, 409))  # 404: no such target
    def backup_panel(req: ApiRequest):
        return accepted(taker.backup_panel(req.body, req.user))

    @api.route("/vms/{vm_id}/actions/backup", "POST", summary="Back up a VM's disks, domain "
               "and record (202 + task)", role="admin", body=VM_BACKUP, status=202,
               response=s.ACCEPTED, tags=("vms",) + TAGS, errors=(409,))
    def backup_vm(req: ApiRequest, vm_id: str):
        return accepted(taker.backup_vm(vm_id, req.body, req.user))

    @api.route("/backups/{backup_id}", summary="One backup", tags=TAGS, response=BACKUP)
    def get_backup(req: ApiRequest, backup_id: str) -> dict[str, Any]:
        return backups.public(backups.require(backup_id, req.user), req.user)

    @api.route("/backups/{backup_id}", "DELETE", summary="Delete a backup (not the base of "
               "an incremental one)", role="admin", tags=TAGS, errors=(409,))
    def delete_backup(req: ApiRequest, backup_id: str) -> None:
        backups.delete(backup_id, req.user["id"])

    @api.route("/backups/{backup_id}/actions/verify", "POST", summary="Re-read the backup "
               "(its whole chain) and check every hash (202 + task)", role="admin",
               body=VERIFY, status=202, response=s.ACCEPTED, tags=TAGS)
    def verify_backup(req: ApiRequest, backup_id: str):
        return accepted(backups.verify(backup_id, req.user, req.body.get("passphrase")))

    @api.route("/backups/{backup_id}/actions/restore", "POST", summary="Restore into the "
               "same VM (stopped first) or as a new VM (202 + task)", role="admin",
               body=RESTORE_SCHEMA, status=202, response=s.ACCEPTED, tags=TAGS,
               errors=(409,))
    def restore_backup(req: ApiRequest, backup_id: str):
        return accepted(restorer.restore(backup_id, req.body, req.user))

    @api.route("/backups/{backup_id}/content", summary="Download the archive", role="admin",
               tags=TAGS, response=s.BINARY)
    def download_backup(req: ApiRequest, backup_id: str) -> Stream:
        backup = backups.require(backup_id)
        target = panel.backup_targets.open(backup["target"])
        return Stream(target.open_read(backup["archive"]), length=backup["size"],
                      filename=backup["archive"].rsplit("/", 1)[-1])


def _declare_schedules(api: RouteTable, panel: PanelHost) -> None:
    schedules = panel.backup_schedules

    @api.route("/backup-schedules", summary="Backup schedules with their next run",
               role="admin", tags=TAGS, response=s.items(SCHEDULE))
    def list_schedules(req: ApiRequest) -> dict[str, Any]:
        return {"items": [schedules.public(x) for x in schedules.all()]}

    @api.route("/backup-schedules", "POST", summary="Add a backup schedule", role="admin",
               body=SCHEDULE_CREATE, status=201, response=SCHEDULE, tags=TAGS,
               errors=(404, 409))  # 404: no such target
    def create_schedule(req: ApiRequest):
        return created(schedules.public(schedules.create(req.body, req.user["id"])))

    @api.route("/backup-schedules/{schedule_id}", summary="One backup schedule", role="admin",
               tags=TAGS, response=SCHEDULE)
    def get_schedule(req: ApiRequest, schedule_id: str) -> dict[str, Any]:
        return schedules.public(schedules.require(schedule_id))

    @api.route("/backup-schedules/{schedule_id}", "PATCH", summary="Change a schedule "
               "(paused: true pauses it)", role="admin", body=SCHEDULE_PATCH, response=SCHEDULE,
               tags=TAGS)
    def patch_schedule(req: ApiRequest, schedule_id: str) -> dict[str, Any]:
        return schedules.public(schedules.update(schedule_id, req.body, req.user["id"]))

    @api.route("/backup-schedules/{schedule_id}", "DELETE", summary="Delete a schedule (its "
               "backups stay)", role="admin", tags=TAGS)
    def delete_schedule(req: ApiRequest, schedule_id: str) -> None:
        schedules.delete(schedule_id, req.user["id"])

    @api.route("/backup-schedules/{schedule_id}/actions/run", "POST", summary="Run a "
               "schedule now (202 + task; 409 while its last run goes on)", role="admin",
               body=s.EMPTY_BODY, status=202, response=s.ACCEPTED, tags=TAGS, errors=(409,))
    def run_schedule(req: ApiRequest, schedule_id: str):
        return accepted(schedules.run_now(schedule_id, req.user["id"]))
