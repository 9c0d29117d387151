"""JSON Schema validation of request bodies and plugin options, with clear 4xx errors.

Whatever a schema says, a validated document never holds a number JSON clients cannot all
read: NaN and infinities, and integers beyond +-(2**53 - 1) (the last ones a JavaScript
client reads exactly; bigger ones also break the store and the JSON encoder) are refused
with the field that holds them. Schemas of the route table get these bounds written in
(:func:`with_bounds`) where they declare none, so the OpenAPI document says so too.

Host paths that plugins take (storage folders, backup folders) are checked with the rule of
:mod:`.paths`, offered here as part of the plugin contract (``check_host_path``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from .errors import Invalid
from .paths import PLAIN_PATH_PATTERN, check_host_path, path_problem, system_problem

__all__ = ["ID", "NAME", "NAME_PATTERN", "PLAIN_PATH_PATTERN", "SAFE_INTEGER",
           "check_host_path", "check_schema", "depth", "number_problems", "path_problem",
           "system_problem", "validate", "validator_for", "with_bounds"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
NAME = {
    "type": "string",
    "pattern": NAME_PATTERN,
    "description": "Letters, digits, '.', '_' and '-', starting with a letter or digit",
}
ID = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"}
#: The bound of every number in a validated document (and the default schema bound).
SAFE_INTEGER = 2**53 - 1
NUMERIC = ("integer", "number")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions",
                   "dependentSchemas")
_SUBSCHEMAS = ("items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems",
               "not", "if", "then", "else", "contains", "propertyNames")
_SUBSCHEMA_LISTS = ("oneOf", "anyOf", "allOf", "prefixItems")

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
    """Raise Invalid (422) listing every problem when ``data`` does not match ``schema``
    or holds a number out of +-SAFE_INTEGER or not finite.

    In a valid ``data``, integral floats become ints in place: JSON Schema counts ``1.0``
    as an integer, and what reads an ``integer`` field (libvirt among others) wants an int.
    """
    problems = list(number_problems(data))
    if not problems:  # NaN passes minimum/maximum: the schema sees only sane numbers
        validator = validator_for(schema)
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        problems = [{"field": ".".join(str(p) for p in e.absolute_path) or None,
                     "message": _describe(e)} for e in errors]
    if not problems:
        _integral_floats_to_ints(data)
        return
    first = problems[0]
    where = f"{first['field']}: " if first["field"] else ""
    raise Invalid(f"invalid {what}: {where}{first['message']}", details=problems)


def _integral_floats_to_ints(data: Any) -> None:
    """Replace, in place, every float of ``data``'s objects and arrays that is an integer."""
    stack = [data]
    while stack:
        node = stack.pop()
        keys = node.keys() if isinstance(node, dict) else range(len(node)) \
            if isinstance(node, list) else ()
        for key in keys:
            value = node[key]
            if isinstance(value, float) and value.is_integer():
                node[key] = int(value)
            elif isinstance(value, dict | list):
                stack.append(value)


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties", "unknown field(s)")
    if error.validator == "pattern":
        return f"{error.instance!r} has characters that are not allowed"
    return error.message


def check_schema(schema: dict[str, Any]) -> None:
    """Fail loudly when a plugin ships an invalid options schema."""
    Draft202012Validator.check_schema(schema)


def _children(node: Any, path: tuple) -> Iterator[tuple[Any, tuple]]:
    if isinstance(node, dict):
        return ((v, (*path, k)) for k, v in node.items())
    if isinstance(node, list):
        return ((v, (*path, i)) for i, v in enumerate(node))
    return iter(())


def number_problems(data: Any) -> Iterator[dict[str, Any]]:
    """Each number of ``data`` that is not finite or beyond +-SAFE_INTEGER (no recursion)."""
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, bool):
            continue
        if isinstance(node, float) and not math.isfinite(node):
            message = f"{node} is not a finite number"
        elif isinstance(node, int | float) and abs(node) > SAFE_INTEGER:
            shown = node if isinstance(node, int) and node.bit_length() < 128 else \
                f"{node:.6g}"
            message = f"{shown} is out of range (at most {SAFE_INTEGER} either way)"
        else:
            stack.extend(_children(node, path))
            continue
        yield {"field": ".".join(map(str, path)) or None, "message": message}


def depth(data: Any) -> int:
    """How deeply objects and arrays nest in ``data`` (a scalar is 0; no recursion)."""
    deepest, stack = 0, [(data, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            level += 1
            deepest = max(deepest, level)
            stack.extend((child, level) for child in (
                node.values() if isinstance(node, dict) else node))
    return deepest


def with_bounds(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """``schema``, or a copy where every integer or number without a minimum or maximum
    gets +-SAFE_INTEGER: the bounds :func:`validate` enforces anyway, made visible."""
    if schema is None or not _unbounded(schema):
        return schema
    bounded = copy.deepcopy(schema)
    for node in _schemas(bounded):
        if _is_numeric(node):
            if "minimum" not in node and "exclusiveMinimum" not in node:
                node["minimum"] = -SAFE_INTEGER
            if "maximum" not in node and "exclusiveMaximum" not in node:
                node["maximum"] = SAFE_INTEGER
    return bounded


def unbounded_numbers(schema: dict[str, Any]) -> list[str]:
    """Where ``schema`` takes an integer or number without both bounds (for tests)."""
    return [where for where, node in _schemas_at(schema, "")
            if _is_numeric(node) and not _has_bounds(node)]


def _unbounded(schema: dict[str, Any]) -> bool:
    return any(_is_numeric(n) and not _has_bounds(n) for n in _schemas(schema))


def _is_numeric(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    return any(k in NUMERIC for k in kinds) and "enum" not in node and "const" not in node


def _has_bounds(node: dict[str, Any]) -> bool:
    return (("minimum" in node or "exclusiveMinimum" in node)
            and ("maximum" in node or "exclusiveMaximum" in node))


def _schemas(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (node for _where, node in _schemas_at(schema, ""))


def _schemas_at(schema: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema of ``schema`` with a readable location (no recursion)."""
    stack = [(where, schema)]
    while stack:
        where, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield where, node
        for key in _SUBSCHEMA_MAPS:
            stack.extend((f"{where}.{name}", sub) for name, sub in (node.get(key) or {}).items())
        stack.extend((f"{where}[{key}]", node[key]) for key in _SUBSCHEMAS if key in node)
        for key in _SUBSCHEMA_LISTS:
            stack.extend((f"{where}<{key}{i}>", sub) for i, sub in enumerate(node.get(key) or []))
