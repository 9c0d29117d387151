"""VM templates: the hardware a VM gets (RAM, vCPUs, CPU priority, disk size)."""

from __future__ import annotations

import time
from typing import Any, TypedDict

from .errors import Conflict, NotFound
from .references import References
from .store import Store
from .validation import NAME

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



class VMTemplateRecord(TypedDict, total=False):
    id: str
    name: str
    memory_mib: int
    vcpus: int
    cpu_shares: int
    disk_gib: int
    description: str
    created: float


DEFAULTS = [
    {"name": "small", "memory_mib": 512, "vcpus": 1, "cpu_shares": 1024, "disk_gib": 10},
    {"name": "medium", "memory_mib": 2048, "vcpus": 2, "cpu_shares": 1024, "disk_gib": 20},
    {"name": "large", "memory_mib": 8192, "vcpus": 4, "cpu_shares": 2048, "disk_gib": 80},
]


class VMTemplateService:
    """Owner of ``vm_templates``; request bodies are validated by the router."""

    def __init__(self, store: Store, references: References) -> None:
        self.store = store
        self.references = references

    def all(self) -> list[VMTemplateRecord]:
        return self.store.all(TABLE)  # type: ignore[return-value]

    def get(self, template_id: str) -> VMTemplateRecord | None:
        return self.store.get(TABLE, template_id)  # type: ignore[return-value]

    def require(self, template_id: str) -> VMTemplateRecord:
        template = self.get(template_id)
        if template is None:
            raise NotFound(f"VM template {template_id!r} not found",
                           code="vm_template_not_found")
        return template

    def create(self, data: dict[str, Any]) -> VMTemplateRecord:
        with self.store.locked():
            if self.store.find_one(TABLE, name=data["name"]):
                raise Conflict(f"VM template {data['name']!r} already exists",
                               code="already_exists")
            return self.store.insert(  # type: ignore[return-value]
                TABLE, {"cpu_shares": 1024, "description": "", **data, "created": time.time()}
            )

    def update(self, template_id: str, data: dict[str, Any]) -> VMTemplateRecord:
        with self.store.locked():
            self.require(template_id)
            if "name" in data:
                other = self.store.find_one(TABLE, name=data["name"])
                if other and other["id"] != template_id:
                    raise Conflict(f"VM template {data['name']!r} already exists",
                                   code="already_exists")
            return self.store.update(TABLE, template_id, data)  # type: ignore[return-value]

    def delete(self, template_id: str) -> None:
        template = self.require(template_id)
        self.references.refuse_if_used("vm_template", template_id,
                                       f"VM template {template['name']!r}", "template_in_use")
        self.store.delete(TABLE, template_id)

    def ensure_defaults(self) -> None:
        if self.store.count(TABLE) == 0:
            for template in DEFAULTS:
                self.create(dict(template))
