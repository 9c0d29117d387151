"""The recipe format (pure): VMmanager's metadata block in shell comments, plus extensions.

A recipe is a shell script carrying one block of ``# key: value`` comment lines::

    # metadata_begin
    # recipe: hello_world              internal name ([A-Za-z0-9_.-], no path separators)
    # tags: debian,ubuntu2204,centos7  compatible with an OS template sharing one tag
    # revision: 3                      optional integer (default 1)
    # description_en: Says hello       description_<lang>, any number
    # param: GREETING type=string default=hi description="What to say"
    # param: DB_PASSWORD type=string required=yes secret=yes
    # param: WORKERS type=int default=2
    # param: MODE type=enum(dev|prod) default=prod
    # timeout: 90m                     3h | 90m | 600 (seconds); default 3h like VMmanager
    # access: all                      all | admins | nobody
    # metadata_end

VMmanager's keys are read unchanged and unknown keys are kept in order, so an existing
recipe library imports as is. ``param``, ``timeout`` and ``access`` are the panel's own.
Parameters reach the script as environment variables (see :func:`check_params`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import Invalid
from .recipes import MAX_RECIPE_BYTES as MAX_SCRIPT_BYTES
from .recipes import RecipeText

BEGIN, END = "metadata_begin", "metadata_end"
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
RESERVED_PARAMS = frozenset({"PATH", "IFS", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS",
                             "PS4", "HOME", "SHELL", "CDPATH", "GLOBIGNORE", "USER",
                             "LOGNAME", "PWD", "OLDPWD", "TMPDIR"})
LINE_RE = re.compile(r"^\s*#\s?(.*?)\s*$")
DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")
ACCESS = ("all", "admins", "nobody")
TRUE, FALSE = ("yes", "true", "1", "on"), ("no", "false", "0", "off")
DEFAULT_TIMEOUT = 3 * 3600  # VMmanager's recipe timeout
MAX_TIMEOUT = 48 * 3600
MAX_VALUE_CHARS = 65536
MAX_PARAMS = 64
SECRET_MASK = "********"  # noqa: S105 - what replaces a secret


def bad(message: str, code: str = "bad_recipe") -> Invalid:
    return Invalid(message, code=code)


@dataclass(frozen=True)
class Param:
    """One typed parameter a recipe declares."""

    name: str
    type: str = "string"
    choices: tuple[str, ...] = ()
    default: str | None = None
    required: bool = False
    secret: bool = False
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """As the API shows it (a secret's default is never shown)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type,
                               "required": self.required, "secret": self.secret,
                               "description": self.description}
        if self.choices:
            out["choices"] = list(self.choices)
        if self.default is not None:
            out["default"] = SECRET_MASK if self.secret else self.default
        return out

    def line(self) -> str:
        """The ``param:`` value that declares it."""
        kind = f"enum({'|'.join(self.choices)})" if self.type == "enum" else self.type
        words = [self.name, f"type={kind}"]
        if self.default is not None:
            words.append(f"default={shlex.quote(self.default)}")
        words += ["required=yes"] * self.required + ["secret=yes"] * self.secret
        if self.description:
            words.append(f"description={shlex.quote(self.description)}")
        return " ".join(words)


@dataclass(frozen=True)
class RecipeMeta:
    """What a recipe's metadata block says."""

    name: str
    tags: tuple[str, ...]
    revision: int = 1
    descriptions: dict[str, str] = field(default_factory=dict)  # language -> text
    params: tuple[Param, ...] = ()
    timeout: int = DEFAULT_TIMEOUT
    access: str = "all"
    extra: tuple[tuple[str, str], ...] = ()  # unknown keys, in order

    @property
    def description(self) -> str:
        """The English description, else the first one."""
        return self.descriptions.get("en") or next(iter(self.descriptions.values()), "")

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


# -- parsing -------------------------------------------------------------------------------
def _block(text: str) -> list[tuple[int, str]]:
    """(line number, comment text) of the lines between metadata_begin and metadata_end."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _comment(line) == BEGIN]
    if not starts:
        raise bad("the recipe has no metadata block ('# metadata_begin' ... "
                  "'# metadata_end')", "recipe_no_metadata")
    if len(starts) > 1:
        raise bad(f"line {starts[1] + 1}: a second metadata block")
    out = []
    for index in range(starts[0] + 1, len(lines)):
        content = _comment(lines[index])
        if content is None:
            raise bad(f"line {index + 1}: the metadata block ends without "
                      "'# metadata_end' (every line inside is a '#' comment)")
        if content == END:
            return out
        if content:
            out.append((index + 1, content))
    raise bad("the metadata block has no '# metadata_end'")


def _comment(line: str) -> str | None:
    match = LINE_RE.match(line)
    return match.group(1) if match else None


def _pairs(text: str) -> list[tuple[int, str, str]]:
    out = []
    for number, content in _block(text):
        key, sep, value = content.partition(":")
        key = key.strip()
        if not sep or not KEY_RE.match(key):
            raise bad(f"line {number}: expected '# key: value', got {content[:80]!r}")
        out.append((number, key.lower(), value.strip()))
    return out


def parse(text: str) -> RecipeMeta:
    """The metadata of a recipe script; Invalid with a clear message when it is wrong."""
    if "\0" in text:
        raise bad("the recipe contains a NUL character")
    if len(text.encode()) > MAX_SCRIPT_BYTES:
        raise bad(f"the recipe is larger than {MAX_SCRIPT_BYTES // 1024} KiB")
    fields: dict[str, Any] = {"descriptions": {}, "params": [], "extra": []}
    seen: set[str] = set()
    for number, key, value in _pairs(text):
        if key != "param" and key in seen:
            raise bad(f"line {number}: {key!r} is given twice")
        seen.add(key)
        try:
            _field(fields, key, value)
        except Invalid as exc:
            raise bad(f"line {number}: {exc.message}", exc.code) from None
    for key in ("recipe", "tags"):
        if key not in seen:
            raise bad(f"the metadata block has no '{key}:' line")
    names = [p.name for p in fields["params"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise bad(f"parameter {duplicates[0]!r} is declared twice")
    if len(names) > MAX_PARAMS:
        raise bad(f"at most {MAX_PARAMS} parameters")
    return RecipeMeta(name=fields["recipe"], tags=fields["tags"],
                      revision=fields.get("revision", 1),
                      descriptions=fields["descriptions"], params=tuple(fields["params"]),
                      timeout=fields.get("timeout", DEFAULT_TIMEOUT),
                      access=fields.get("access", "all"), extra=tuple(fields["extra"]))


def _field(fields: dict[str, Any], key: str, value: str) -> None:
    if key == "recipe":
        fields["recipe"] = check_name(value)
    elif key == "tags":
        fields["tags"] = parse_tags(value)
    elif key == "revision":
        if not value.isdigit() or len(value) > 9:
            raise bad(f"revision must be a whole number, not {value!r}")
        fields["revision"] = int(value)
    elif key.startswith("description_") and len(key) > len("description_"):
        fields["descriptions"][key[len("description_"):]] = value
    elif key == "param":
        fields["params"].append(parse_param(value))
    elif key == "timeout":
        fields["timeout"] = parse_duration(value)
    elif key == "access":
        if value not in ACCESS:
            raise bad(f"access must be one of {', '.join(ACCESS)}, not {value!r}")
        fields["access"] = value
    else:
        fields["extra"].append((key, value))


def check_name(name: str) -> str:
    """A recipe's internal name: letters, digits, '_', '.', '-'; no path separators."""
    if not NAME_RE.match(name) or set(name) == {"."}:
        raise bad(f"bad recipe name {name[:80]!r}: use letters, digits, '_', '.' and '-' "
                  "(no path separators, at most 128 characters)", "bad_recipe_name")
    return name


def parse_tags(value: str) -> tuple[str, ...]:
    tags = [t.strip().lower() for t in value.split(",") if t.strip()]
    if not tags:
        raise bad("tags: name at least one OS tag (debian,ubuntu2204,...)")
    for tag in tags:
        if not TAG_RE.match(tag):
            raise bad(f"bad tag {tag[:80]!r}")
    return tuple(dict.fromkeys(tags))


def parse_duration(value: str) -> int:
    """Seconds of ``3h``, ``90m``, ``1h30m``, ``600s`` or ``600``."""
    match = DURATION_RE.match(value.strip().lower())
    if not value.strip() or not match:
        raise bad(f"timeout must look like 3h, 90m, 1h30m or 600 (seconds), not {value!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not 1 <= total <= MAX_TIMEOUT:
        raise bad(f"timeout must be between 1 second and {MAX_TIMEOUT // 3600} hours")
    return total


def _parse_type(text: str) -> tuple[str, tuple[str, ...]]:
    if text in ("string", "int", "bool"):
        return text, ()
    match = re.fullmatch(r"enum\(([^()]*)\)", text)
    if not match:
        raise bad(f"type must be string, int, bool or enum(a|b|...), not {text!r}")
    choices = tuple(c.strip() for c in match.group(1).split("|"))
    if not all(choices) or len(set(choices)) != len(choices):
        raise bad(f"enum {text!r}: choices must be distinct and not empty")
    return "enum", choices


def parse_param(value: str) -> Param:
    """``NAME type=... default=... required=yes secret=yes description=...``."""
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise bad(f"param: {exc}") from None
    if not words or not PARAM_NAME_RE.match(words[0]):
        raise bad("param: start with a name of letters, digits and '_' (an environment "
                  f"variable name), not {(words or [''])[0][:64]!r}")
    name = words[0]
    if name.upper() in RESERVED_PARAMS or name.upper().startswith(("LD_", "HVP_")):
        raise bad(f"param: {name!r} is a reserved environment variable")
    attrs: dict[str, str] = {}
    for word in words[1:]:
        key, sep, val = word.partition("=")
        if not sep or key not in ("type", "default", "required", "secret", "description"):
            raise bad(f"param {name}: unknown attribute {word[:40]!r} (use type=, "
                      "default=, required=, secret=, description=)")
        if key in attrs:
            raise bad(f"param {name}: {key} is given twice")
        attrs[key] = val
    kind, choices = _parse_type(attrs.get("type", "string"))
    param = Param(name, kind, choices, attrs.get("default"),
                  _flag(name, attrs, "required"), _flag(name, attrs, "secret"),
                  attrs.get("description", ""))
    if param.default is not None:
        try:
            coerce(param, param.default)
        except Invalid as exc:
            raise bad(f"default of {exc.message}") from None
    if param.required and param.default is not None:
        raise bad(f"param {name}: a required parameter has no default")
    return param


def _flag(name: str, attrs: dict[str, str], key: str) -> bool:
    text = attrs.get(key, "no").lower()
    if text not in TRUE + FALSE:
        raise bad(f"param {name}: {key} must be yes or no, not {text!r}")
    return text in TRUE


def parse_all(items: Iterable[RecipeText], limit: int, log: Callable[[str], None]
              ) -> tuple[list[tuple[RecipeText, RecipeMeta]], list[dict[str, str]]]:
    """Parse what a source offers: the valid recipes, and the others with their reason."""
    good, skipped = [], []
    for count, item in enumerate(items):
        if count >= limit:
            raise bad(f"the source offers more than {limit} recipes", "too_many_recipes")
        try:
            good.append((item, parse(item.script)))
        except Invalid as exc:
            skipped.append({"origin": item.origin, "reason": exc.message})
            log(f"skipped {item.origin}: {exc.message}")
    return good, skipped


# -- serializing ---------------------------------------------------------------------------
def serialize(meta: RecipeMeta) -> str:
    """The metadata block (with its begin/end lines) that :func:`parse` reads as ``meta``."""
    lines = [BEGIN, f"recipe: {meta.name}", f"tags: {','.join(meta.tags)}",
             f"revision: {meta.revision}"]
    lines += [f"description_{lang}: {text}" for lang, text in meta.descriptions.items()]
    lines += [f"{key}: {value}" for key, value in meta.extra]
    lines += [f"param: {p.line()}" for p in meta.params]
    if meta.timeout != DEFAULT_TIMEOUT:
        lines.append(f"timeout: {meta.timeout}")
    if meta.access != "all":
        lines.append(f"access: {meta.access}")
    return "".join(f"# {line}\n" for line in [*lines, END])


# -- parameters ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamValues:
    """Checked parameter values: the environment a run gets, and what may be shown."""

    env: dict[str, str]
    secrets: tuple[str, ...]  # secret values (to redact from output)
    public: dict[str, str]  # env with secret values masked

    def redact(self, text: str) -> str:
        """``text`` with every secret value (and each line of one) masked."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, SECRET_MASK)
        return text


def coerce(param: Param, value: Any) -> str:
    """``value`` as the environment string of ``param``; Invalid when of the wrong type."""
    where = f"parameter {param.name}"
    if param.type == "int":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise bad(f"{where} must be an integer", "bad_recipe_params")
        text = str(value).strip()
        if not re.fullmatch(r"-?\d{1,18}", text):
            raise bad(f"{where} must be an integer, not {_show(param, text)}",
                      "bad_recipe_params")
        return str(int(text))
    if param.type == "bool":
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, str) and value.lower() in TRUE + FALSE:
            return "1" if value.lower() in TRUE else "0"
        raise bad(f"{where} must be true or false", "bad_recipe_params")
    if not isinstance(value, str):
        raise bad(f"{where} must be a string", "bad_recipe_params")
    if "\0" in value or len(value) > MAX_VALUE_CHARS:
        raise bad(f"{where}: at most {MAX_VALUE_CHARS} characters, no NUL", "bad_recipe_params")
    if param.type == "enum" and value not in param.choices:
        raise bad(f"{where} must be one of {', '.join(param.choices)}, not "
                  f"{_show(param, value)}", "bad_recipe_params")
    return value


def _show(param: Param, text: str) -> str:  # a secret's wrong value is not echoed
    return "(secret)" if param.secret else repr(text[:40])


def check_params(meta: RecipeMeta, given: Mapping[str, Any]) -> ParamValues:
    """Check ``given`` against the declared parameters; defaults filled in.

    Unknown names, missing required ones and values of the wrong type are refused.
    """
    unknown = sorted(set(given) - {p.name for p in meta.params})
    if unknown:
        raise bad(f"recipe {meta.name!r} has no parameter {unknown[0]!r}"
                  + (f" (it takes {', '.join(p.name for p in meta.params)})"
                     if meta.params else " (it takes none)"), "bad_recipe_params")
    env: dict[str, str] = {}
    secrets: list[str] = []
    for param in meta.params:
        if param.name in given and given[param.name] is not None:
            env[param.name] = coerce(param, given[param.name])
        elif param.default is not None:
            env[param.name] = param.default
        elif param.required:
            raise bad(f"recipe {meta.name!r} needs parameter {param.name!r}", "bad_recipe_params")
        if param.secret and env.get(param.name):
            value = env[param.name]
            secrets += [value, *(part for part in value.splitlines() if len(part) >= 3)]
    public = {k: SECRET_MASK if (p := meta.param(k)) and p.secret else v
              for k, v in env.items()}
    return ParamValues(env, tuple(dict.fromkeys(secrets)), public)


def compatible(recipe_tags: Any, template_tags: Any) -> bool:
    """Whether a recipe suits an OS template: they share at least one tag."""
    return bool({str(t).lower() for t in recipe_tags} & {str(t).lower() for t in template_tags})
