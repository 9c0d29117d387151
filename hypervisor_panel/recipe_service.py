"""Recipes: owner of ``recipes``, ``recipe_sources``, ``recipe_runs`` and ``recipe_settings``.

A recipe keeps its script (its metadata is parsed from it) and its origin: uploaded, or a
source record whose refresh re-reads it. ``choose`` picks a recipe for a VM, ``run`` runs
it over SSH in a task (``guest_ssh``) and records the run; secrets are masked everywhere.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import Conflict, Forbidden, Invalid, NotFound
from .events import EventLog
from .guest_ssh import BOOT_TIMEOUT, GuestEndpoint, run_on_guest
from .limits import allowed
from .recipe_format import ParamValues, RecipeMeta, check_params, compatible, parse, parse_all
from .recipe_output import OutputLog
from .recipes import MAX_RECIPES, RecipeSource, RecipeText
from .references import References
from .store import Store
from .tasks import TaskCancelled, TaskContext, TaskManager
from .validation import validate

RECIPES, SOURCES, RUNS, SETTINGS = ("recipes", "recipe_sources", "recipe_runs", "recipe_settings")
SETTINGS_KEY = "cluster"
DEFAULTS: dict[str, Any] = {"users_may_add": False, "default_recipe": None}
MAX_RUNS_PER_VM = 50
User = dict[str, Any]
Record = dict[str, Any]


class RecipeService:
    """See the module docstring. ``require_vm(vm_id, user)`` (wired by the panel) raises
    404 unless ``user`` may see the VM; without it only admins see runs."""

    def __init__(self, store: Store, tasks: TaskManager, events: EventLog,
                 references: References, sources: Mapping[str, RecipeSource]) -> None:
        self.store, self.tasks, self.events, self.references = store, tasks, events, references
        self.sources = dict(sources)  # their options schemas are checked by the contract
        self.require_vm: Callable[[str, User], Any] | None = None

    # -- settings ------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        stored = self.store.get(SETTINGS, SETTINGS_KEY) or {}
        return {k: stored.get(k, v) for k, v in DEFAULTS.items()}

    def update_settings(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Change settings (validated by the router); the default recipe must exist."""
        if fields.get("default_recipe") and not self._named(fields["default_recipe"]):
            raise Invalid(f"no recipe is named {fields['default_recipe']!r}",
                          code="recipe_not_found")
        with self.store.locked():
            if self.store.get(SETTINGS, SETTINGS_KEY):
                self.store.update(SETTINGS, SETTINGS_KEY, fields)
            else:
                self.store.insert(SETTINGS, {**DEFAULTS, **fields, "id": SETTINGS_KEY})
        return self.settings()

    # -- recipes -------------------------------------------------------------------------
    @staticmethod
    def public(rec: Record, user: User) -> Record:
        """A recipe as ``user`` may see it: the script only for admins and its owner."""
        mine = user["role"] == "admin" or rec.get("owner") == user["id"]
        return {**{k: v for k, v in rec.items() if k != "script" or mine},
                "usable": _may_use(rec, user)}

    def listing(self, user: User, tags: Iterable[str] | None = None) -> list[Record]:
        """The recipes ``user`` may see (users: what they may use, and their own), only
        those compatible with ``tags`` when given."""
        items = [self.public(r, user) for r in self.store.all(RECIPES) if _visible(r, user)
                 and (tags is None or compatible(r["tags"], tags))]
        return sorted(items, key=lambda r: (r["name"], r["created"]))

    def require(self, recipe_id: str, user: User) -> Record:
        rec = self.store.get(RECIPES, recipe_id)
        if rec is None or not _visible(rec, user):
            raise NotFound(f"recipe {recipe_id!r} not found", code="recipe_not_found")
        return rec

    def view(self, recipe_id: str, user: User) -> Record:
        return self.public(self.require(recipe_id, user), user)

    @staticmethod
    def _fields(meta: RecipeMeta, script: str) -> Record:
        return {"name": meta.name, "tags": list(meta.tags), "revision": meta.revision,
                "description": meta.description, "descriptions": dict(meta.descriptions),
                "params": [p.to_dict() for p in meta.params], "timeout": meta.timeout,
                "extra": [list(pair) for pair in meta.extra], "script": script,
                "sha256": hashlib.sha256(script.encode()).hexdigest(), "updated": time.time()}

    def add(self, body: dict[str, Any], user: User) -> Record:
        """Add an uploaded recipe (admins; users when ``users_may_add`` is on for everyone
        or a user has the ``add_recipes`` permission)."""
        admin = user["role"] == "admin"
        if not (self.settings()["users_may_add"] or allowed(user, "add_recipes")):
            raise Forbidden("only admins add recipes here", code="recipes_admin_only")
        meta = parse(body["script"])
        owner = None if admin else user["id"]
        with self.store.locked():
            for other in self.store.find(RECIPES, name=meta.name, owner=owner):
                if set(other["tags"]) == set(meta.tags):
                    raise Conflict(f"recipe {meta.name!r} with tags {','.join(meta.tags)} "
                                   f"exists (id {other['id']}); edit it instead",
                                   code="already_exists")
            rec = self.store.insert(RECIPES, {
                **self._fields(meta, body["script"]), "access": body.get("access", meta.access),
                "access_set": "access" in body, "owner": owner, "created": time.time(),
                "origin": {"kind": "upload", "source": None, "path": None}})
        self.events.emit("recipe.add", rec["id"], actor=user["id"], name=meta.name)
        return self.public(rec, user)

    def edit(self, recipe_id: str, body: dict[str, Any], user: User) -> Record:
        """Change an uploaded recipe's text, and/or any recipe's ``access``."""
        rec = self._editable(recipe_id, user)
        fields: Record = {}
        if "script" in body:
            if rec["origin"]["kind"] == "source":
                raise Conflict(f"recipe {rec['name']!r} comes from a source: change it "
                               "there and refresh", code="recipe_from_source")
            meta = parse(body["script"])
            fields = self._fields(meta, body["script"])
            if not rec.get("access_set"):
                fields["access"] = meta.access
        if "access" in body:
            fields.update(access=body["access"], access_set=True)
        rec = self.store.update(RECIPES, recipe_id, fields)
        self.events.emit("recipe.edit", recipe_id, actor=user["id"], name=rec["name"])
        return self.public(rec, user)

    def _editable(self, recipe_id: str, user: User) -> Record:
        rec = self.require(recipe_id, user)
        if user["role"] != "admin" and rec.get("owner") != user["id"]:
            raise Forbidden(f"recipe {rec['name']!r} is not yours", code="not_your_recipe")
        return rec

    def delete(self, recipe_id: str, user: User) -> None:
        rec = self._editable(recipe_id, user)
        if rec["origin"]["kind"] == "source":
            raise Conflict(f"recipe {rec['name']!r} comes from a source: remove it there, "
                           "or set its access to nobody", code="recipe_from_source")
        self.references.refuse_if_used("recipe", recipe_id, f"recipe {rec['name']!r}",
                                       "recipe_in_use")
        self.store.delete(RECIPES, recipe_id)
        self.events.emit("recipe.delete", recipe_id, actor=user["id"], name=rec["name"])

    # -- choosing ------------------------------------------------------------------------
    def choose(self, recipe: str | None, template_tags: Iterable[str] | None,
               user: User) -> Record | None:
        """The recipe to run on a VM whose OS template has ``template_tags`` (None: not
        checked): ``recipe`` by id or internal name (the first usable, compatible one of
        that name), or with None the cluster default (None when unset or nothing fits)."""
        tags = None if template_tags is None else list(template_tags)
        fits = (lambda r: True) if tags is None else (lambda r: compatible(r["tags"], tags))
        if recipe is None:
            name = self.settings()["default_recipe"]
            return next((r for r in self._named(name or "") if r.get("owner") is None
                         and r["access"] != "nobody" and fits(r)), None)
        rec = self.store.get(RECIPES, recipe)
        if rec is None or not _visible(rec, user):
            named = [r for r in self._named(recipe) if _visible(r, user)]
            if not named:
                raise NotFound(f"recipe {recipe!r} not found", code="recipe_not_found")
            usable = [r for r in named if _may_use(r, user)] or named
            rec = next((r for r in usable if fits(r)), usable[0])
        if not _may_use(rec, user):
            who = "no one" if rec["access"] == "nobody" else "admins"
            raise Forbidden(f"recipe {rec['name']!r} is available to {who}",
                            code="recipe_not_allowed")
        if not fits(rec):
            raise Invalid(f"recipe {rec['name']!r} (tags {','.join(rec['tags'])}) does not "
                          f"suit this OS (tags {','.join(tags or []) or 'none'})",
                          code="recipe_incompatible")
        return rec

    def _named(self, name: str) -> list[Record]:
        return sorted(self.store.find(RECIPES, name=name), key=lambda r: r["created"])

    def check_params(self, rec: Record, params: Mapping[str, Any]) -> dict[str, str]:
        """The variables a run of ``rec`` would get, secrets masked; Invalid when wrong."""
        return check_params(parse(rec["script"]), params).public

    # -- sources -------------------------------------------------------------------------
    def source_kinds(self) -> list[Record]:
        return [s.info() for s in self.sources.values()]

    def _kind(self, name: str) -> RecipeSource:
        if name not in self.sources:
            raise Invalid(f"no recipe source kind {name!r}", code="unknown_recipe_source")
        return self.sources[name]

    def source_public(self, doc: Record) -> Record:
        kind = self.sources.get(doc["source"])
        return {**doc, "options": kind.public_options(doc["options"]) if kind else {},
                "recipes": len(self._of_source(doc["id"]))}

    def source_view(self, source_id: str) -> Record:
        return self.source_public(self.require_source(source_id))

    def source_listing(self) -> list[Record]:
        return [self.source_public(d) for d in self.store.all(SOURCES)]

    def require_source(self, source_id: str) -> Record:
        doc = self.store.get(SOURCES, source_id)
        if doc is None:
            raise NotFound(f"recipe source {source_id!r} not found", code="recipe_source_not_found")
        return doc

    def _of_source(self, source_id: str) -> list[Record]:
        return self.store.find(RECIPES, predicate=lambda r: r["origin"]["source"] == source_id)

    def add_source(self, body: dict[str, Any], user: User) -> Record:
        """A task reading the source; only when that works are it and its recipes
        recorded (a failing source creates nothing)."""
        kind = self._kind(body["source"])
        options = body.get("options", {})
        validate(options, kind.options_schema, "options")
        if self.store.find_one(SOURCES, name=body["name"]):
            raise Conflict(f"recipe source {body['name']!r} exists", code="already_exists")
        doc = {"name": body["name"], "source": kind.name, "options": options,
               "description": body.get("description", ""), "created": time.time()}
        return self.tasks.submit(
            "recipe_source.add", lambda ctx: self._refresh(ctx, doc, user, new=True),
            title=f"Add recipe source {body['name']}", owner=user["id"],
            lock_key=f"recipe-source:{body['name']}")

    def refresh_source(self, source_id: str, user: User) -> Record:
        doc = self.require_source(source_id)
        return self.tasks.submit(
            "recipe_source.refresh", lambda ctx: self._refresh(ctx, doc, user, new=False),
            title=f"Refresh recipe source {doc['name']}", owner=user["id"],
            subject=source_id, lock_key=f"recipe-source:{doc['name']}")

    def _refresh(self, ctx: TaskContext, doc: Record, user: User, new: bool) -> Record:
        items = self._kind(doc["source"]).recipes(doc["options"])
        texts = parse_all(itertools.islice(items, MAX_RECIPES + 1), MAX_RECIPES, ctx.log)
        ctx.check_cancelled()
        with self.store.locked():
            if new and self.store.find_one(SOURCES, name=doc["name"]):
                raise Conflict(f"recipe source {doc['name']!r} exists", code="already_exists")
            if not new and self.store.get(SOURCES, doc["id"]) is None:
                raise NotFound("the recipe source was removed meanwhile",
                               code="recipe_source_not_found")
            doc = self.store.insert(SOURCES, doc) if new else doc
            result = {"source": doc["id"], **self._apply(doc["id"], texts[0]),
                      "skipped": texts[1]}
            self.store.update(SOURCES, doc["id"], {"refreshed": time.time(),
                                                   "last_result": result})
        ctx.log(", ".join(f"{k} {len(result[k])}" for k in
                          ("added", "updated", "removed", "unchanged", "skipped")))
        return result

    def _apply(self, source_id: str, texts: list[tuple[RecipeText, RecipeMeta]]
               ) -> dict[str, list[str]]:
        """Add, update (matched by internal name and origin, when the text or revision
        changed) and remove the source's recipes; the caller holds the store lock."""
        old = {(r["name"], r["origin"]["path"]): r for r in self._of_source(source_id)}
        out: dict[str, list[str]] = {k: [] for k in ("added", "updated", "removed", "unchanged")}
        for item, meta in texts:
            fields = self._fields(meta, item.script)
            rec = old.pop((meta.name, item.origin), None)
            if rec is None:
                self.store.insert(RECIPES, {
                    **fields, "access": meta.access, "access_set": False, "owner": None,
                    "created": time.time(),
                    "origin": {"kind": "source", "source": source_id, "path": item.origin}})
                out["added"].append(meta.name)
            elif rec["sha256"] == fields["sha256"]:
                out["unchanged"].append(meta.name)
            else:
                access = rec["access"] if rec.get("access_set") else meta.access
                self.store.update(RECIPES, rec["id"], {**fields, "access": access})
                out["updated"].append(f"{meta.name} {rec['revision']} -> {meta.revision}")
        for rec in old.values():
            self.store.delete(RECIPES, rec["id"])
            out["removed"].append(rec["name"])
        return out

    def remove_source(self, source_id: str, user: User) -> None:
        """Remove a source and its recipes (refused while one of them is in use)."""
        doc = self.require_source(source_id)
        if self.tasks.busy(f"recipe-source:{doc['name']}"):
            raise Conflict(f"recipe source {doc['name']!r} is being refreshed", code="busy")
        with self.store.locked():
            recipes = self._of_source(source_id)
            for rec in recipes:
                self.references.refuse_if_used("recipe", rec["id"], f"recipe {rec['name']!r}",
                                               "recipe_in_use")
            for rec in recipes:
                self.store.delete(RECIPES, rec["id"])
            self.store.delete(SOURCES, source_id)
        self.events.emit("recipe_source.delete", source_id, actor=user["id"], name=doc["name"])

    # -- runs ----------------------------------------------------------------------------
    def run(self, endpoint: GuestEndpoint, recipe: str | Record, params: Mapping[str, Any],
            user: User, subject_vm_id: str, *, template_tags: Iterable[str] | None = None,
            secrets: Iterable[str] = (), boot_timeout: float = BOOT_TIMEOUT) -> Record:
        """Submit a task running ``recipe`` (an id or name, checked with ``choose``; or a
        record ``choose`` returned) on the VM; bad parameters are refused before any
        record or task is made. ``secrets``: more values to mask (the VM's password)."""
        endpoint.pinned()  # a malformed host key line fails here, before anything is made
        rec = self._runnable(recipe, template_tags, user)
        values = check_params(parse(rec["script"]), params)
        values = ParamValues(values.env, (*values.secrets, *filter(None, secrets)),
                             values.public)
        run = self._new_run(rec, values, user, subject_vm_id)
        try:
            task = self.tasks.submit(
                "recipe.run", lambda ctx: self._execute(ctx, run, endpoint, rec, values,
                                                        boot_timeout),
                title=f"Run recipe {rec['name']} on VM {subject_vm_id}", owner=user["id"],
                subject=subject_vm_id, lock_key=f"recipe:{subject_vm_id}")
        except Exception:
            self.store.delete(RUNS, run["id"])
            raise
        self.store.update(RUNS, run["id"], {"task": task["id"]})
        return task

    def _runnable(self, recipe: str | Record, tags: Iterable[str] | None, user: User) -> Record:
        rec = self.choose(recipe, tags, user) if isinstance(recipe, str) else \
            self.store.get(RECIPES, recipe["id"])
        if rec is None or rec["access"] == "nobody":
            raise NotFound("the recipe is gone or disabled", code="recipe_not_found")
        return rec

    def _new_run(self, rec: Record, values: ParamValues, user: User, vm_id: str) -> Record:
        with self.store.locked():
            old = sorted(self.store.find(RUNS, vm=vm_id), key=lambda r: r["created"])
            for stale in old[:max(0, len(old) - MAX_RUNS_PER_VM + 1)]:
                self.store.delete(RUNS, stale["id"])
            return self.store.insert(RUNS, {
                "vm": vm_id, "recipe": rec["id"], "name": rec["name"],
                "revision": rec["revision"], "params": values.public, "user": user["id"],
                "state": "queued", "exit_code": None, "error": None, "log": [],
                "task": None, "created": time.time(), "started": None, "finished": None})

    def _execute(self, ctx: TaskContext, run: Record, endpoint: GuestEndpoint, rec: Record,
                values: ParamValues, boot_timeout: float = BOOT_TIMEOUT) -> Record:
        """The body of a run task: wait for SSH, run, record; raises on failure."""
        out = OutputLog(ctx.log, lambda f: self.store.update(RUNS, run["id"], f),
                        values.redact)
        stop = threading.Event()
        forget = ctx.on_cancel(stop.set)
        try:
            ctx.check_cancelled()
            out.save(state="running", started=time.time())
            env = {**values.env, "HVP_VM_ID": run["vm"], "HVP_RECIPE": rec["name"],
                   "HVP_RECIPE_REVISION": str(rec["revision"])}
            outcome = run_on_guest(endpoint, rec["script"], env, timeout=rec["timeout"],
                                   stop=stop, on_line=out.line, boot_timeout=boot_timeout)
            outcome.check(f"recipe {rec['name']!r}", rec["timeout"])
            if outcome.stopped:
                raise TaskCancelled()
            out.save(state="succeeded", exit_code=0, finished=time.time())
            return {"run": run["id"], "exit_code": 0}
        except Exception as exc:  # recorded in the run, raised again with secrets masked
            raise out.failed(exc, stop.is_set()) from None
        finally:
            forget()

    def runs(self, vm_id: str, user: User, limit: int = 20) -> list[Record]:
        """The recipe runs of a VM, newest first, with their logs."""
        if self.require_vm is not None:
            self.require_vm(vm_id, user)
        elif user["role"] != "admin":
            raise NotFound(f"VM {vm_id!r} not found", code="vm_not_found")
        found = self.store.find(RUNS, vm=vm_id)
        return sorted(found, key=lambda r: r["created"], reverse=True)[:limit]

    def forget_vm(self, vm_id: str) -> None:
        """Drop the runs of a deleted VM."""
        with self.store.locked():
            for run in self.store.find(RUNS, vm=vm_id):
                self.store.delete(RUNS, run["id"])

    def recover(self) -> int:
        """Mark runs left queued or running by a previous process as failed."""
        found = self.store.find(RUNS, predicate=lambda r: r["state"] in ("queued", "running"))
        error = {"code": "interrupted", "message": "the panel stopped during the run"}
        for run in found:
            self.store.update(RUNS, run["id"], {"state": "failed", "finished": time.time(),
                                                "error": error})
        return len(found)


def _visible(rec: Record, user: User) -> bool:
    return user["role"] == "admin" or rec.get("owner") == user["id"] or \
        (rec.get("owner") is None and rec["access"] == "all")


def _may_use(rec: Record, user: User) -> bool:
    """Access ``all``: everyone (a user's own recipe: that user); ``admins``; ``nobody``."""
    if rec["access"] == "nobody":
        return False
    return user["role"] == "admin" or (rec["access"] == "all"
                                       and rec.get("owner") in (None, user["id"]))
