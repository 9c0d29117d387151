"""The OS-template contract: template metadata, the repository index, and template sources.

An OS template is a metadata record (:class:`TemplateMeta`, validated by
:data:`METADATA_SCHEMA`) plus one file: a disk image (qcow2 or raw, optionally compressed
with gzip, xz or zstd) or an installer ISO. A repository is an **index** that lists such
entries; a plugin's :class:`OSTemplateSource` (registered by
``register_os_template_sources``) reads the index and opens an entry's file at an offset,
so downloads resume after a broken connection.

The index format (``index.json``, UTF-8 JSON, at most 4 MiB)::

    {"version": 1,
     "templates": [
       {"name": "debian-12", "os_family": "debian", "os_version": "12",
        "arch": "x86_64", "kind": "image", "format": "qcow2", "compression": "xz",
        "file": "images/debian-12.qcow2.xz",
        "sha256": "<64 hex digits of the file as stored>", "size": 123456789,
        "uncompressed_size": 2147483648, "min_disk_gib": 4, "min_memory_mib": 512,
        "default_user": "debian", "config": "cloud-init", "tags": ["lts"],
        "description": "Debian 12 generic cloud image"}]}

``file`` is relative to the index (a path under the repository: no ``..`` or ``.``, no
leading ``/``, no backslash, no control character); ``name`` is unique in the index and
has no path separator; ``sha256`` and ``size`` describe the file as stored (compressed);
``kind`` follows from ``format``; ``config: "script"`` needs ``script`` (the guest
configuration script itself, inline). Unknown fields are refused.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, BinaryIO, ClassVar, Literal, TypedDict

from .errors import Invalid, Unavailable
from .validation import ID as _ID
from .validation import validate

__all__ = ["COMPRESSIONS", "CONFIGS", "ENTRY_SCHEMA", "FORMATS", "IMPORT_SCHEMA",
           "INDEX_MAX_BYTES", "INDEX_SCHEMA", "KINDS", "METADATA_SCHEMA", "REFRESH_SCHEMA",
           "TEMPLATE_NAME", "UPLOAD_SCHEMA", "BadIndex", "OSTemplateSource",
           "SourceUnavailable", "TemplateEntry", "TemplateMeta", "check_relative_path",
           "index_changes", "option_defaults", "parse_index", "repository_schema",
           "volume_format_for", "with_defaults"]

TEMPLATE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
FORMATS = ("qcow2", "raw", "iso")
COMPRESSIONS = ("none", "gzip", "xz", "zstd")
CONFIGS = ("cloud-init", "script", "none")
KINDS = ("image", "iso")
INDEX_MAX_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 10_000
MAX_FILE_BYTES = 65536 * 1024**3  # a template file: at most the largest disk (64 TiB)
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$",
          "description": "SHA-256 of the file as stored in the repository (lower-case hex)"}
_TEXT = {"type": "string", "maxLength": 64}


class TemplateMeta(TypedDict, total=False):
    """What describes one OS template (see :data:`METADATA_SCHEMA`)."""

    name: str
    os_family: str
    os_version: str
    arch: str
    tags: list[str]
    min_disk_gib: int
    min_memory_mib: int
    default_user: str
    config: Literal["cloud-init", "script", "none"]
    script: str
    kind: Literal["image", "iso"]
    format: Literal["qcow2", "raw", "iso"]
    compression: Literal["none", "gzip", "xz", "zstd"]
    sha256: str
    size: int
    uncompressed_size: int
    description: str


class TemplateEntry(TemplateMeta, total=False):
    """One entry of a repository index: the metadata plus ``file`` (relative path)."""

    file: str


METADATA_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string", "pattern": TEMPLATE_NAME,
             "description": "letters, digits, '.', '_', '-'; no path separators"},
    "os_family": {**_TEXT, "pattern": r"^[a-z0-9][a-z0-9._-]*$",
                  "description": "debian, ubuntu, alpine, windows, ..."},
    "os_version": _TEXT,
    "arch": {"enum": ["x86_64", "i686", "aarch64", "ppc64le", "s390x"], "default": "x86_64"},
    "tags": {"type": "array", "maxItems": 32, "uniqueItems": True,
             "items": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"}},
    "min_disk_gib": {"type": "integer", "minimum": 1, "maximum": 65536, "default": 1},
    "min_memory_mib": {"type": "integer", "minimum": 16, "maximum": 4194304, "default": 256},
    "default_user": {"type": "string", "pattern": r"^[a-z_][a-z0-9_-]{0,31}$"},
    "config": {"enum": list(CONFIGS), "default": "cloud-init",
               "description": "how the guest is configured: a cloud-init NoCloud seed, the "
                              "template's own script, or nothing"},
    "script": {"type": "string", "maxLength": 65536,
               "description": "the configuration script (config: script)"},
    "kind": {"enum": list(KINDS), "description": "image (a disk) or iso (an installer); "
             "follows from format"},
    "format": {"enum": list(FORMATS)},
    "compression": {"enum": list(COMPRESSIONS), "default": "none"},
    "sha256": SHA256,
    "size": {"type": "integer", "minimum": 1, "maximum": MAX_FILE_BYTES,
             "description": "bytes of the stored file"},
    "uncompressed_size": {"type": "integer", "minimum": 1, "maximum": MAX_FILE_BYTES},
    "description": {"type": "string", "maxLength": 500},
}
_RULES: list[dict[str, Any]] = [
    {"if": {"properties": {"config": {"const": "script"}}, "required": ["config"]},
     "then": {"required": ["script"]}},
    {"if": {"properties": {"format": {"const": "iso"}}, "required": ["format"]},
     "then": {"properties": {"kind": {"const": "iso"}}},
     "else": {"properties": {"kind": {"const": "image"}}}},
]
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "os_family", "format", "sha256", "size"],
    "properties": METADATA_PROPERTIES, "allOf": _RULES,
}
ENTRY_SCHEMA: dict[str, Any] = {
    **METADATA_SCHEMA, "required": [*METADATA_SCHEMA["required"], "file"],
    "properties": {**METADATA_PROPERTIES,
                   "file": {"type": "string", "minLength": 1, "maxLength": 1024}},
}
INDEX_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["templates"],
    "properties": {"version": {"const": 1},
                   "templates": {"type": "array", "maxItems": MAX_ENTRIES,
                                 "items": ENTRY_SCHEMA}},
}
_DEFAULTS = {k: p["default"] for k, p in METADATA_PROPERTIES.items() if "default" in p}

# -- API request bodies ------------------------------------------------------------------
IMPORT_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["repo", "entry", "storage"],
    "properties": {"repo": _ID, "entry": {"type": "string", "pattern": TEMPLATE_NAME},
                   "storage": _ID, "node": _ID,
                   "name": {"type": "string", "pattern": TEMPLATE_NAME,
                            "description": "the template's name (default: the entry's)"}},
}
UPLOAD_SCHEMA: dict[str, Any] = {
    **METADATA_SCHEMA, "required": ["name", "os_family", "format", "storage"],
    "properties": {**METADATA_PROPERTIES, "storage": _ID, "node": _ID},
}
REFRESH_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False,
                                  "properties": {"update": {
                                      "type": "boolean", "default": False,
                                      "description": "also re-import imported templates "
                                                     "whose entry changed"}}}


def index_changes(old: list[TemplateEntry], new: list[TemplateEntry]) -> dict[str, Any]:
    """What a refreshed index changed: names ``added``, ``changed``, ``removed``, and the
    number ``unchanged``."""
    before, after = {e["name"]: e for e in old}, {e["name"]: e for e in new}
    changed = sorted(n for n in before.keys() & after.keys() if before[n] != after[n])
    return {"added": sorted(after.keys() - before.keys()), "changed": changed,
            "removed": sorted(before.keys() - after.keys()),
            "unchanged": len(before.keys() & after.keys()) - len(changed)}


def volume_format_for(image_format: str, native: str, offered: tuple[str, ...]
                      ) -> tuple[str | None, bool]:
    """How a storage holds an image: (format to create the volume with, None for the
    back end's own; whether a qcow2 must be converted to raw first). ``native`` and
    ``offered`` are the back end's ``volume_format`` and ``volume_formats``."""
    formats = {f for f in (native, *offered) if f}
    if image_format == "qcow2" and "qcow2" in formats:
        return "qcow2", False
    if "raw" in formats or not native:  # no native format: raw by nature (RBD)
        return ("raw" if "raw" in formats else None), image_format == "qcow2"
    raise Invalid(f"a storage of {native} volumes cannot hold a {image_format} image",
                  code="unsupported_format")


def option_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``default`` of each property of an options schema."""
    return {k: p["default"] for k, p in schema.get("properties", {}).items() if "default" in p}


def repository_schema(sources: dict[str, OSTemplateSource]) -> dict[str, Any]:
    """POST /os-template-repos: ``name``, ``source`` (a registered one) and ``options``
    per that source's ``options_schema``."""
    branches = []
    for name, source in sorted(sources.items()):
        options = copy.deepcopy(source.options_schema)
        options["required"] = [k for k in options.get("required", [])
                               if k not in option_defaults(options)]
        branches.append({"if": {"properties": {"source": {"const": name}},
                                "required": ["source"]},
                         "then": {"required": ["options"], "properties": {"options": options}}})
    return {"type": "object", "additionalProperties": False, "required": ["name", "source"],
            "properties": {"name": {"type": "string", "pattern": TEMPLATE_NAME},
                           "source": {"enum": sorted(sources)}, "options": {"type": "object"},
                           "description": {"type": "string", "maxLength": 500}},
            **({"allOf": branches} if branches else {})}


class BadIndex(Invalid):
    """A repository index that does not parse or holds a bad entry (the message says where)."""

    code = "bad_index"


class SourceUnavailable(Unavailable):
    """The repository cannot be reached (connection refused, timeout, HTTP/FTP error)."""

    code = "repository_unreachable"


def check_relative_path(path: str) -> str:
    """``path`` when it stays inside the repository, else BadIndex."""
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or re.search(r"[\x00-\x1f\x7f]", path)
            or re.match(r"^[A-Za-z]:", path) or any(p in ("", ".", "..") for p in parts)):
        raise BadIndex(f"file {path!r} is not a relative path inside the repository",
                       code="unsafe_path")
    return path


def parse_index(data: bytes, where: str = "index") -> list[TemplateEntry]:
    """The entries of an index document (defaults filled in); BadIndex says what is wrong."""
    if len(data) > INDEX_MAX_BYTES:
        raise BadIndex(f"{where} is larger than {INDEX_MAX_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadIndex(f"{where} is not valid JSON: {exc}") from exc
    try:
        validate(doc, INDEX_SCHEMA, where)
    except Invalid as exc:
        raise BadIndex(exc.message, details=exc.details) from exc
    entries: list[TemplateEntry] = []
    seen: set[str] = set()
    for raw in doc["templates"]:
        check_relative_path(raw["file"])
        if raw["name"] in seen:
            raise BadIndex(f"{where} lists template {raw['name']!r} twice")
        seen.add(raw["name"])
        entries.append(with_defaults(raw))  # type: ignore[arg-type]
    return entries


def with_defaults(meta: TemplateMeta) -> TemplateMeta:
    """``meta`` with the schema's defaults and ``kind`` (iso for ISOs, else image)."""
    kind = "iso" if meta.get("format") == "iso" else "image"
    return {**_DEFAULTS, "kind": kind, **meta}  # type: ignore[typeddict-item]


class OSTemplateSource:
    """A kind of repository (a folder, HTTP(S), FTP, ...); register instances, unique by
    ``name``. ``options_schema`` (JSON Schema) validates a repository's options; options
    marked ``writeOnly`` (passwords) are stored but never returned.

    Both methods raise :class:`SourceUnavailable` when the repository cannot be reached and
    :class:`BadIndex` when what it serves is wrong. Reads from an opened stream raise
    ``OSError`` when the connection breaks; a stream that ends early counts as broken.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def read_index(self, options: dict[str, Any]) -> list[TemplateEntry]:
        """The repository's entries (use :func:`parse_index`)."""
        raise NotImplementedError

    def open(self, options: dict[str, Any], entry: TemplateEntry,
             offset: int = 0) -> tuple[BinaryIO, int]:
        """A binary stream of ``entry``'s file from byte ``offset`` on, and the file's
        whole size in bytes; the caller closes the stream."""
        raise NotImplementedError

    def public_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` without the secrets (properties marked ``writeOnly``)."""
        secret = {k for k, p in self.options_schema.get("properties", {}).items()
                  if p.get("writeOnly")}
        return {k: v for k, v in options.items() if k not in secret}
