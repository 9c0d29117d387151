"""Backup targets: where archives go (owner of the ``backup_targets`` table).

A target is a record (name, plugin ``backend``, options) plus its secrets (the options its
plugin marks ``writeOnly``: FTP passwords, ...), which never enter the store: they live in
``data_dir/secrets/backup-targets/<id>.json`` (mode 0600) and are merged in only when a
plugin instance is made. A target is checked (connect, log in, write a probe) before it is
saved or changed; it cannot be deleted while backups or schedules use it.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

from ..backup import BackupTarget, TargetError
from ..errors import Conflict, Invalid, NotFound
from ..events import EventLog
from ..references import References
from ..store import Store, atomic_write
from ..validation import NAME, validate

TABLE = "backup_targets"


def secret_keys(cls: type[BackupTarget]) -> set[str]:
    return {key for key, prop in cls.options_schema.get("properties", {}).items()
            if prop.get("writeOnly")}


def create_schema(classes: dict[str, type[BackupTarget]]) -> dict[str, Any]:
    """POST /backup-targets: name, backend (a registered target), options per its schema."""
    branches = [{"if": {"properties": {"backend": {"const": name}}, "required": ["backend"]},
                 "then": {"properties": {"options": copy.deepcopy(cls.options_schema)},
                          "required": ["options"] if cls.options_schema.get("required")
                          else []}}
                for name, cls in sorted(classes.items())]
    return {"type": "object", "additionalProperties": False, "required": ["name", "backend"],
            "properties": {
                "name": NAME,
                "backend": {"enum": sorted(classes) or ["none"],
                            "description": "a registered backup target"},
                "options": {"type": "object", "description": "per the target's options_schema"},
                "description": {"type": "string", "maxLength": 500}},
            "allOf": branches}


PATCH_SCHEMA = {"type": "object", "additionalProperties": False, "minProperties": 1,
                "properties": {"description": {"type": "string", "maxLength": 500},
                               "options": {"type": "object",
                                           "description": "a new set of options (checked)"}}}


class BackupTargetService:
    """Creates, checks and opens backup targets; keeps their secrets out of the store."""

    def __init__(self, store: Store, events: EventLog, references: References,
                 classes: dict[str, type[BackupTarget]], data_dir: Path) -> None:
        self.store = store
        self.events = events
        self.references = references
        self.classes = classes
        self.secret_dir = Path(data_dir) / "secrets" / "backup-targets"
        self.create_schema = create_schema(classes)

    # -- lookups -----------------------------------------------------------------------
    def require(self, target_id: str) -> dict[str, Any]:
        target = self.store.get(TABLE, target_id)
        if target is None:
            raise NotFound(f"backup target {target_id!r} not found",
                           code="backup_target_not_found")
        return target

    def all(self) -> list[dict[str, Any]]:
        return self.store.all(TABLE)

    def open(self, target_id: str) -> BackupTarget:
        """A plugin instance for the target, with its secrets (server-side only)."""
        target = self.require(target_id)
        cls = self._class(target["backend"])
        options = {**target.get("options", {}), **self._secrets(target_id)}
        return cls({**target, "options": options})

    def kinds(self) -> list[dict[str, Any]]:
        """The registered targets with their option schemas (the UI builds forms)."""
        return [{"id": cls.name, "name": cls.name, "description": cls.description,
                 "resumable": cls.resumable, "options_schema": cls.options_schema}
                for cls in self.classes.values()]

    def public(self, target: dict[str, Any]) -> dict[str, Any]:
        """The API view: options without secrets (only which secrets are set)."""
        out = dict(target)
        out["secrets_set"] = sorted(self._secrets(target["id"]))
        return out

    # -- changes -----------------------------------------------------------------------
    def create(self, data: dict[str, Any], actor: str | None = None) -> dict[str, Any]:
        """Check the target (connect, write a probe), then save it; nothing kept on failure."""
        cls = self._class(data["backend"])
        options = self._with_defaults(cls, data.get("options", {}))
        with self.store.locked():
            if self.store.find_one(TABLE, name=data["name"]):
                raise Conflict(f"backup target {data['name']!r} already exists",
                               code="already_exists")
        record = {"name": data["name"], "backend": cls.name,
                  "description": data.get("description", ""), "created": time.time()}
        cls({**record, "options": options}).check()
        public, secret = self._split(cls, options)
        with self.store.locked():
            if self.store.find_one(TABLE, name=data["name"]):
                raise Conflict(f"backup target {data['name']!r} already exists",
                               code="already_exists")
            stored = self.store.insert(TABLE, {**record, "options": public})
            self._write_secrets(stored["id"], secret)
        self.events.emit("backup_target.create", stored["id"], actor=actor, name=stored["name"])
        return stored

    def update(self, target_id: str, data: dict[str, Any], actor: str | None = None
               ) -> dict[str, Any]:
        target = self.require(target_id)
        fields: dict[str, Any] = {}
        if "description" in data:
            fields["description"] = data["description"]
        if "options" in data:
            cls = self._class(target["backend"])
            # Secrets left out of a change keep their stored value (the UI never has them).
            merged = {**self._secrets(target_id), **data["options"]}
            options = self._with_defaults(cls, merged)
            cls({**target, "options": options}).check()
            public, secret = self._split(cls, options)
            fields["options"] = public
            self._write_secrets(target_id, secret)
        stored = self.store.update(TABLE, target_id, fields)
        self.events.emit("backup_target.update", target_id, actor=actor, name=target["name"])
        return stored

    def delete(self, target_id: str, actor: str | None = None) -> None:
        target = self.require(target_id)
        self.references.refuse_if_used("backup_target", target_id,
                                       f"backup target {target['name']!r}", "target_in_use")
        self.store.delete(TABLE, target_id)
        (self.secret_dir / f"{target_id}.json").unlink(missing_ok=True)
        self.events.emit("backup_target.delete", target_id, actor=actor, name=target["name"])

    def check(self, target_id: str) -> dict[str, Any]:
        """Check a saved target now; ``{"ok": bool, "message", "free_bytes"}``."""
        target = self.open(target_id)
        try:
            target.check()
            return {"ok": True, "message": "reachable and writable",
                    "free_bytes": target.free_space()}
        except TargetError as exc:
            return {"ok": False, "message": exc.message, "free_bytes": None}

    # -- helpers -----------------------------------------------------------------------
    def _class(self, backend: str) -> type[BackupTarget]:
        cls = self.classes.get(backend)
        if cls is None:
            raise Invalid(f"backup target type {backend!r} is not loaded", code="unknown_backend")
        return cls

    @staticmethod
    def _with_defaults(cls: type[BackupTarget], options: dict[str, Any]) -> dict[str, Any]:
        defaults = {k: p["default"] for k, p in cls.options_schema.get("properties", {}).items()
                    if "default" in p}
        merged = {**defaults, **options}
        validate(merged, cls.options_schema, f"{cls.name} target options")
        return merged

    @staticmethod
    def _split(cls: type[BackupTarget], options: dict[str, Any]
               ) -> tuple[dict[str, Any], dict[str, Any]]:
        keys = secret_keys(cls)
        return ({k: v for k, v in options.items() if k not in keys},
                {k: v for k, v in options.items() if k in keys})

    def _secrets(self, target_id: str) -> dict[str, Any]:
        try:
            return json.loads((self.secret_dir / f"{target_id}.json").read_text())
        except FileNotFoundError:
            return {}

    def _write_secrets(self, target_id: str, secret: dict[str, Any]) -> None:
        path = self.secret_dir / f"{target_id}.json"
        if not secret:
            path.unlink(missing_ok=True)
            return
        self.secret_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secret_dir, 0o700)
        os.chmod(self.secret_dir.parent, 0o700)
        old = os.umask(0o077)
        try:
            atomic_write(path, json.dumps(secret).encode())
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
