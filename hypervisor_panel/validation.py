"""JSON Schema validation of request bodies and plugin options, with clear 4xx errors."""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from .errors import Invalid

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
NAME = {
    "type": "string",
    "pattern": NAME_PATTERN,
    "description": "Letters, digits, '.', '_' and '-', starting with a letter or digit",
}
ID = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"}

# id(schema) -> (schema, validator). The entry keeps the schema alive, so its id cannot be
# reused by another object while cached; the identity check guards the lookup anyway.
_cache: dict[int, tuple[dict[str, Any], Draft202012Validator]] = {}


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    """A compiled validator for ``schema`` (schemas are module constants: compiled once)."""
    entry = _cache.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = _cache[id(schema)] = (schema, Draft202012Validator(schema))
    return entry[1]


def validate(data: Any, schema: dict[str, Any], what: str = "request") -> None:
    """Raise Invalid (422) listing every problem when ``data`` does not match ``schema``."""
    validator = validator_for(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    problems = [{"field": ".".join(str(p) for p in e.absolute_path) or None,
                 "message": _describe(e)} for e in errors]
    first = problems[0]
    where = f"{first['field']}: " if first["field"] else ""
    raise Invalid(f"invalid {what}: {where}{first['message']}", details=problems)


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties", "unknown field(s)")
    if error.validator == "pattern":
        return f"{error.instance!r} has characters that are not allowed"
    return error.message


def check_schema(schema: dict[str, Any]) -> None:
    """Fail loudly when a plugin ships an invalid options schema."""
    Draft202012Validator.check_schema(schema)
