"""VM templates: the hardware a VM gets (RAM, vCPUs, CPU priority, disk size)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .errors import Conflict
from .validation import NAME, validate

if TYPE_CHECKING:
    from .panel import Panel

TABLE = "vm_templates"
MAX_MEMORY_MIB = 4 * 1024 * 1024
MAX_DISK_GIB = 64 * 1024

FIELDS = {
    "name": NAME,
    "memory_mib": {"type": "integer", "minimum": 16, "maximum": MAX_MEMORY_MIB},
    "vcpus": {"type": "integer", "minimum": 1, "maximum": 255},
    "cpu_shares": {
        "type": "integer",
        "minimum": 2,
        "maximum": 262144,
        "description": "CPU priority relative to other VMs (cgroup cpu shares; 1024 = normal)",
    },
    "disk_gib": {"type": "integer", "minimum": 1, "maximum": MAX_DISK_GIB},
    "description": {"type": "string", "maxLength": 500},
}
CREATE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "memory_mib", "vcpus", "disk_gib"],
    "properties": FIELDS,
}
PATCH_SCHEMA = {"type": "object", "additionalProperties": False, "minProperties": 1,
                "properties": FIELDS}

DEFAULTS = [
    {"name": "small", "memory_mib": 512, "vcpus": 1, "cpu_shares": 1024, "disk_gib": 10},
    {"name": "medium", "memory_mib": 2048, "vcpus": 2, "cpu_shares": 1024, "disk_gib": 20},
    {"name": "large", "memory_mib": 8192, "vcpus": 4, "cpu_shares": 2048, "disk_gib": 80},
]


class VMTemplateService:
    def __init__(self, panel: Panel) -> None:
        self.store = panel.store

    def create(self, data: dict[str, Any]) -> dict[str, Any]:
        validate(data, CREATE_SCHEMA, "VM template")
        with self.store.locked():
            if self.store.find_one(TABLE, name=data["name"]):
                raise Conflict(f"VM template {data['name']!r} already exists",
                               code="already_exists")
            return self.store.insert(
                TABLE, {"cpu_shares": 1024, "description": "", **data, "created": time.time()}
            )

    def update(self, template_id: str, data: dict[str, Any]) -> dict[str, Any]:
        validate(data, PATCH_SCHEMA, "VM template")
        with self.store.locked():
            self.store.require(TABLE, template_id, "VM template")
            if "name" in data:
                other = self.store.find_one(TABLE, name=data["name"])
                if other and other["id"] != template_id:
                    raise Conflict(f"VM template {data['name']!r} already exists",
                                   code="already_exists")
            return self.store.update(TABLE, template_id, data)

    def delete(self, template_id: str) -> None:
        template = self.store.require(TABLE, template_id, "VM template")
        users = self.store.find("vms", vm_template=template_id)
        if users:
            raise Conflict(f"VM template {template['name']!r} is used by {len(users)} VM(s)",
                           code="template_in_use")
        self.store.delete(TABLE, template_id)

    def ensure_defaults(self) -> None:
        if self.store.count(TABLE) == 0:
            for template in DEFAULTS:
                self.create(dict(template))
