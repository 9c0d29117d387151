"""Response schemas of the API: the fields a client may rely on (objects may carry more)."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

ID = {"type": "string"}
TIME = {"type": "number"}
NULLABLE_STRING = {"type": ["string", "null"]}


def obj(required: list[str], **properties: Any) -> Schema:
    """An object schema with these properties, ``required`` present."""
    return {"type": "object", "required": required, "properties": properties}


def items(schema: Schema) -> Schema:
    """A collection answer: ``{"items": [...]}``."""
    return obj(["items"], items={"type": "array", "items": schema})


EMPTY_BODY = {"type": "object", "additionalProperties": False, "properties": {}}
OK = obj(["ok"], ok={"type": "boolean"})
TASK = obj(
    ["id", "name", "kind", "state", "progress", "log"],
    id=ID, name={"type": "string"}, kind={"type": "string"},
    subject=NULLABLE_STRING, owner=NULLABLE_STRING,
    state={"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
    progress={"type": "integer", "minimum": 0, "maximum": 100},
    log={"type": "array", "items": {"type": "string"}},
    error={"anyOf": [{"type": "null"}, obj(["code", "message"], code={"type": "string"},
                                           message={"type": "string"})]},
    result={}, created=TIME,
    detail={"type": "object", "description": "transfer progress: bytes_done, bytes_total, "
                                              "rate_bytes_per_s"},
)
ACCEPTED = obj(["task"], task=TASK)
VM = obj(
    ["id", "name", "state", "node", "vm_template", "memory_mib", "vcpus", "disks"],
    id=ID, name={"type": "string"}, state={"type": "string"}, node=ID, owner=ID,
    vm_template=ID, storage=ID, memory_mib={"type": "integer"}, vcpus={"type": "integer"},
    disk_gib={"type": "integer"}, domain_type={"type": "string"},
    disks={"type": "array", "items": obj(["storage", "volume", "target"], storage=ID,
                                          volume={"type": "string"},
                                          target={"type": "string"})},
    stats={"type": "object"}, problem={"type": "string"},
)
NODE_USER = obj(["id", "name", "status", "kind"], id=ID, name={"type": "string"},
                status={"type": "string"}, kind={"enum": ["local", "demo", "ssh"]})
NODE = {**NODE_USER, "properties": {
    **NODE_USER["properties"], "uri": {"type": "string"},
    "status_reason": NULLABLE_STRING, "domain_type": {"enum": ["auto", "kvm", "qemu"]},
    "kvm_usable": {"type": ["boolean", "null"]}, "resources": {"type": "object"},
    "maintenance": {"type": "boolean"}, "task": TASK}}
NODE_ANY = {"anyOf": [NODE, NODE_USER]}
STORAGE = obj(["id", "name", "backend", "nodes"], id=ID, name={"type": "string"},
              backend={"type": "string"}, options={"type": "object"},
              shared={"type": "boolean"}, nodes={"type": "object"})
BACKEND = obj(["id", "name", "options_schema"], id=ID, name={"type": "string"},
              description={"type": "string"}, shared={"type": "boolean"},
              options_schema={"type": "object"})
VOLUME = obj(["name", "capacity", "allocation"], id=ID, name={"type": "string"},
             capacity={"type": "integer"}, allocation={"type": "integer"},
             used_by={"type": "array", "items": {"type": "string"}})
UPLOADED = obj(["name", "uploaded"], name={"type": "string"}, uploaded={"type": "integer"})
TEMPLATE = obj(["id", "name", "memory_mib", "vcpus", "disk_gib"], id=ID,
               name={"type": "string"}, memory_mib={"type": "integer"},
               vcpus={"type": "integer"}, cpu_shares={"type": "integer"},
               disk_gib={"type": "integer"})
USER = obj(["id", "name", "role"], id=ID, name={"type": "string"},
           role={"enum": ["admin", "user"]}, quota={"type": "object"},
           permissions={"type": "object"},
           usage={"type": "object", "description": "what the user's VMs take, per quota key",
                  "additionalProperties": {"type": "integer"}})
LOGIN = obj(["token", "user"], token={"type": "string"}, user=USER)
TOKEN = obj(["id", "name", "kind", "user"], id=ID, name={"type": "string"},
            kind={"type": "string"}, user=ID, created=TIME,
            expires={"type": ["number", "null"]})
TOKEN_CREATED = {**TOKEN, "required": [*TOKEN["required"], "token"],
                 "properties": {**TOKEN["properties"], "token": {"type": "string"}}}
PLUGIN = obj(["id", "name", "module", "hooks", "builtin"], id=ID, name={"type": "string"},
             module={"type": "string"}, hooks={"type": "array", "items": {"type": "string"}},
             builtin={"type": "boolean"}, distribution=NULLABLE_STRING,
             version=NULLABLE_STRING)
EVENT = obj(["id", "kind", "time"], id=ID, kind={"type": "string"}, subject=NULLABLE_STRING,
            actor=NULLABLE_STRING, time=TIME, data={"type": "object"})
SETTINGS = obj(["memory_overcommit"], memory_overcommit={"type": "number"})
HEALTH = obj(["status"], status={"const": "ok"}, version={"type": "string"},
             nodes=obj(["total", "online"], total={"type": "integer"},
                       online={"type": "integer"}))
CONSOLE = obj(["text"], text={"type": "string"})
MIGRATION_CHECK = obj(["ok", "problems"], ok={"type": "boolean"},
                      problems={"type": "array", "items": {"type": "string"}})
LOCAL_LIBVIRT = obj(["uri", "answers", "node_exists", "offer"], uri={"type": "string"},
                    answers={"type": "boolean"}, node_exists={"type": "boolean"},
                    offer={"type": "boolean"})
HOST_KEY = obj(["host", "port", "key_type", "fingerprint", "public_key"],
               host={"type": "string"}, port={"type": "integer"},
               key_type={"type": "string"}, fingerprint={"type": "string"},
               public_key={"type": "string"})
BINARY = {"type": "string", "format": "binary"}
OPENAPI = obj(["openapi", "paths"], openapi={"type": "string"}, paths={"type": "object"})
