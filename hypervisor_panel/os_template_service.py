"""OS templates and their repositories (owner of ``os_templates`` and ``os_template_repos``).

A repository is a registered source (``register_os_template_sources``) with options; its
index is read when it is added (a broken or unreachable one is refused at once) and on
refresh, and its entries are kept with it as the catalog. Importing an entry is a task:
download (resumable, SHA-256 verified), unpack, check with ``qemu-img``, create a volume
in the chosen storage and upload the image into it; an upload feeds the same pipeline.
A failure removes the volume and files made so far; the record stays ``failed`` with the
reason. Work files: ``DATA_DIR/os-templates`` (``cache/``: resumable downloads; ``jobs/ID``).
Who sees and changes which template: :mod:`.os_template_access`.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import downloads as dl
from . import os_template_access as access
from . import os_templates as ost
from .errors import BadRequest, Conflict, Invalid, NotFound, PanelError, error_record
from .events import EventLog
from .references import References
from .storage import GIB
from .storages import StorageService
from .store import Store
from .tasks import TaskContext, TaskManager
from .validation import check_schema, validate
from .volumes import volume_ref

if TYPE_CHECKING:
    from .nodes import NodeManager

TABLE = "os_templates"
REPOS = "os_template_repos"
EXTENSIONS = {"qcow2": "qcow2", "raw": "img", "iso": "iso"}
Fetch = Callable[[TaskContext, Path], Path]  # (task, job folder) -> the file as stored
Record = dict[str, Any]


def _meta(entry: Record) -> Record:
    return {k: v for k, v in entry.items() if k != "file"}


class OSTemplateService:
    """Repositories (add, refresh, remove) and templates (import, upload, list, delete)."""

    retries = 5  # breaks in a row, without progress, before a download gives up
    retry_delay = 1.0

    def __init__(self, store: Store, tasks: TaskManager, events: EventLog,
                 references: References, storages: StorageService, nodes: NodeManager,
                 sources: dict[str, ost.OSTemplateSource], data_dir: Path) -> None:
        for source in sources.values():
            check_schema(source.options_schema)
        self.store, self.tasks, self.events = store, tasks, events
        self.references, self.storages, self.nodes = references, storages, nodes
        self.sources, self.repo_schema = sources, ost.repository_schema(sources)
        self.work = Path(data_dir) / "os-templates"
        references.register("storage", lambda sid: [
            r["name"] for r in self.store.find(TABLE, storage=sid) if r.get("volume")],
            "OS template")
        references.register("volume", self._on_volume, "OS template")
        self._recover()

    def _recover(self) -> None:
        """Imports a previous process left running failed; their work files go."""
        for record in self.store.find(TABLE, state="importing"):
            self.store.update(TABLE, record["id"], {"state": "failed", "error": {
                "code": "interrupted", "message": "the panel stopped during the import"}})
        for record in self.store.find(TABLE, state="receiving"):
            self.store.update(TABLE, record["id"], {"state": "uploading", "progress": 0})
        for job in (self.work / "jobs").glob("*"):
            shutil.rmtree(job, ignore_errors=True)

    def _on_volume(self, ref: str) -> list[str]:
        return [r["name"] for r in self.store.find(TABLE, predicate=lambda r: bool(
            r.get("volume")) and volume_ref(r["storage"], r["volume"]) == ref)]

    # -- repositories --------------------------------------------------------------------
    def require_repo(self, repo_id: str) -> Record:
        repo = self.store.get(REPOS, repo_id)
        if repo is None:
            raise NotFound(f"repository {repo_id!r} not found", code="repo_not_found")
        return repo

    def _source(self, repo: Record) -> ost.OSTemplateSource:
        if repo["source"] not in self.sources:
            raise Invalid(f"OS template source {repo['source']!r} is not loaded",
                          code="unknown_source")
        return self.sources[repo["source"]]

    def public_repo(self, repo: Record, entries: bool = False) -> Record:
        """The API view: options without secrets; the entries only when asked."""
        out = {k: v for k, v in repo.items() if entries or k != "entries"}
        if repo["source"] in self.sources:
            out["options"] = self.sources[repo["source"]].public_options(repo["options"])
        return {**out, "templates": len(repo.get("entries", []))}

    def repos(self) -> list[Record]:
        return sorted(map(self.public_repo, self.store.all(REPOS)), key=lambda r: r["name"])

    def add_repo(self, data: Record, actor: str | None = None) -> Record:
        """Read the index once (refused when it is broken or unreachable), then record."""
        validate(data, self.repo_schema, "repository")
        source = self.sources[data["source"]]
        options = {**ost.option_defaults(source.options_schema), **data.get("options", {})}
        entries = source.read_index(options)
        with self.store.locked():
            if self.store.find_one(REPOS, name=data["name"]):
                raise Conflict(f"repository {data['name']!r} already exists",
                               code="already_exists")
            repo = self.store.insert(REPOS, {
                "name": data["name"], "source": source.name, "options": options,
                "description": data.get("description", ""), "entries": entries,
                "created": time.time(), "refreshed": time.time(), "error": None})
        self.events.emit("os_template_repo.add", repo["id"], actor=actor, name=repo["name"])
        return self.public_repo(repo)

    def refresh_repo(self, repo_id: str, user: Record, update: bool = False) -> Record:
        """A task: re-read the index and report what changed (added, changed, removed);
        ``update`` also re-imports changed templates that no VM uses."""
        repo = self.require_repo(repo_id)

        def run(ctx: TaskContext) -> Record:
            try:
                entries = self._source(repo).read_index(repo["options"])
            except PanelError as exc:
                self.store.update(REPOS, repo_id, {"error": error_record(exc, "import_failed")})
                raise
            result = ost.index_changes(self.require_repo(repo_id)["entries"], entries)
            fresh = self.store.update(REPOS, repo_id, {"entries": entries, "error": None,
                                                       "refreshed": time.time()})
            ctx.log("{} added, {} changed, {} removed".format(
                *(len(result[k]) for k in ("added", "changed", "removed"))))
            if update:
                result.update(self._update_changed(ctx, fresh, entries))
            return result

        return self.tasks.submit("os_template_repo.refresh", run, owner=user["id"],
                                 title=f"Refresh repository {repo['name']}", subject=repo_id,
                                 lock_key=f"os_template_repo:{repo_id}")

    def remove_repo(self, repo_id: str, actor: str | None = None) -> None:
        """Forget a repository; the templates imported from it stay."""
        repo = self.require_repo(repo_id)
        if self.tasks.busy(f"os_template_repo:{repo_id}"):
            raise Conflict(f"repository {repo['name']!r} is being refreshed", code="busy")
        self.store.delete(REPOS, repo_id)
        for part in (self.work / "cache").glob(f"{repo_id}-*"):
            part.unlink(missing_ok=True)
        self.events.emit("os_template_repo.remove", repo_id, actor=actor, name=repo["name"])

    # -- templates: views ----------------------------------------------------------------
    def get(self, template_id: str) -> Record | None:
        return self.store.get(TABLE, template_id)

    def require(self, template_id: str) -> Record:
        record = self.get(template_id)
        if record is None:
            raise NotFound(f"OS template {template_id!r} not found",
                           code="os_template_not_found")
        return record

    def all(self) -> list[Record]:
        return sorted(self.store.all(TABLE), key=lambda r: r["name"])

    def catalog(self, records: list[Record]) -> list[Record]:
        """Every repository entry, with the template imported from it (if any)."""
        imported = {(r.get("repo"), r.get("entry")): r for r in records if r.get("repo")}
        out = []
        for repo in sorted(self.store.all(REPOS), key=lambda r: r["name"]):
            for entry in repo["entries"]:
                mine = imported.get((repo["id"], entry["name"]), {})
                out.append({**entry, "id": f"{repo['id']}:{entry['name']}", "repo": repo["id"],
                            "repo_name": repo["name"], "entry": entry["name"],
                            "imported": mine.get("id"),
                            "update_available": mine.get("state") == "ready"
                            and mine.get("sha256") != entry["sha256"]})
        return out

    # -- templates: import ---------------------------------------------------------------
    def _reserve(self, meta: Record, fields: Record) -> Record:
        """A new record; a name is only reused after a failed import."""
        self.storages.require(fields["storage"])
        with self.store.locked():
            existing = self.store.find_one(TABLE, name=meta["name"])
            if existing and existing["state"] != "failed":
                raise Conflict(f"OS template {meta['name']!r} already exists",
                               code="already_exists")
            if existing:
                self.store.delete(TABLE, existing["id"])
            return self.store.insert(TABLE, {**ost.with_defaults(meta), **fields,  # type: ignore
                                             "volume": None, "virtual_size": None,
                                             "error": None, "created": time.time()})

    def import_from_repo(self, body: Record, user: Record) -> Record:
        """A task importing a catalog entry (``repo``, ``entry``) into ``storage``."""
        validate(body, ost.IMPORT_SCHEMA)
        repo = self.require_repo(body["repo"])
        entry = next((e for e in repo["entries"] if e["name"] == body["entry"]), None)
        if entry is None:
            raise NotFound(f"repository {repo['name']!r} has no template {body['entry']!r}",
                           code="entry_not_found")
        record = self._reserve({**_meta(entry), "name": body.get("name", entry["name"])}, {
            "origin": "repo", "repo": repo["id"], "entry": entry["name"], "state": "importing",
            "storage": body["storage"], "node": body.get("node")})
        return self._submit(record, user, self._downloader(repo, entry))

    def _downloader(self, repo: Record, entry: Record) -> Fetch:
        source = self._source(repo)

        def fetch(ctx: TaskContext, job: Path) -> Path:
            cache = self.work / "cache"
            cache.mkdir(parents=True, exist_ok=True)
            ctx.progress(1, f"downloading {entry['file']} from {repo['name']}")
            path = dl.download(lambda offset: source.open(repo["options"], entry, offset),
                               cache / f"{repo['id']}-{entry['sha256']}", entry["sha256"],
                               entry["size"], progress=dl.stage(ctx.progress, 1, 70,
                                                                "downloaded"),
                               check=ctx.check_cancelled, watch=ctx.on_cancel,
                               retries=self.retries, delay=self.retry_delay)
            return Path(shutil.move(path, job / "download"))

        return fetch

    def _submit(self, record: Record, user: Record, fetch: Fetch) -> Record:
        def run(ctx: TaskContext) -> Record:
            try:
                fields = self._pipeline(ctx, self.require(record["id"]), fetch)
            except BaseException as exc:
                self.store.update(TABLE, record["id"], {
                    "state": "failed", "error": error_record(exc, "import_failed")})
                raise
            ready = self.store.update(TABLE, record["id"], {**fields, "state": "ready"})
            self.events.emit("os_template.import", record["id"], actor=user["id"],
                             name=ready["name"])
            return ready

        task = self.tasks.submit("os_template.import", run, owner=user["id"],
                                 title=f"Import OS template {record['name']}",
                                 subject=record["id"], lock_key=f"os_template:{record['id']}")
        self.store.update(TABLE, record["id"], {"task": task["id"]})
        return task

    def _pipeline(self, ctx: TaskContext, record: Record, fetch: Fetch) -> Record:
        """Fetch, unpack, check, store; the record's fields for the stored image."""
        job = self.work / "jobs" / record["id"]
        job.mkdir(parents=True, exist_ok=True)
        try:
            path = fetch(ctx, job)
            if record["compression"] != "none":
                ctx.progress(70, f"unpacking ({record['compression']})")
                path = dl.decompress(path, job / "image", record["compression"],
                                     limit=max(0, shutil.disk_usage(job).free - GIB),
                                     expected=record.get("uncompressed_size"),
                                     progress=dl.stage(ctx.progress, 70, 80, "unpacked"),
                                     check=ctx.check_cancelled)
            ctx.progress(80, "checking the image with qemu-img")
            info = dl.inspect_image(path, record["format"])
            ctx.check_cancelled()
            return self._store_volume(ctx, record, path, info)
        finally:
            shutil.rmtree(job, ignore_errors=True)

    def _node_for(self, storage: Record, node_id: str | None) -> str:
        online = [n for n in self.nodes.online_ids() if n in storage.get("nodes", {})]
        if not online or (node_id and node_id not in online):
            raise Invalid(f"storage {storage['name']!r} is on no online node"
                          + (f" {node_id!r}" if node_id else ""), code="node_offline")
        return node_id or online[0]

    def _store_volume(self, ctx: TaskContext, record: Record, path: Path,
                      info: dl.ImageInfo) -> Record:
        """A new volume holding the image; deleted again when the upload fails."""
        storage = self.storages.require(record["storage"])
        backend = self.storages.backend(storage)
        node_id = self._node_for(storage, record.get("node"))
        conn = self.nodes.connection(node_id).get()
        create_as, convert = ost.volume_format_for(info.format, backend.volume_format,
                                                   backend.volume_formats)
        if convert:
            ctx.progress(83, "converting the image to raw for this storage")
            path = dl.convert_to_raw(path, path.with_name("converted.raw"))
        size, fmt = path.stat().st_size, "raw" if convert else info.format
        name = f"ost-{record['name']}-{record['sha256'][:8]}.{EXTENSIONS[fmt]}"
        ctx.progress(85, f"creating volume {name} in storage {storage['name']}")
        backend.create_volume(conn, name, max(size, info.virtual_size), create_as)
        try:
            with open(path, "rb") as fh:
                metered = dl.Metered(fh, size, dl.stage(ctx.progress, 85, 99, "uploaded"),
                                     ctx.check_cancelled)
                backend.upload(conn, name, metered, size)  # type: ignore[arg-type]
        except BaseException:
            backend.delete_volume(conn, name)
            raise
        finally:
            self.nodes.connection(node_id).changed()
        return {"volume": name, "node": node_id, "format": fmt, "error": None,
                "virtual_size": info.virtual_size, "imported": time.time(), "min_disk_gib": max(
                    record.get("min_disk_gib", 1), math.ceil(info.virtual_size / GIB))}

    def _update_changed(self, ctx: TaskContext, repo: Record, index: list[Record]) -> Record:
        """Re-import ready templates whose entry changed; one a VM uses keeps its image
        (asked again at the swap: a VM made during the download wins)."""
        updated, kept, entries = [], [], {e["name"]: e for e in index}
        for record in self.store.find(TABLE, repo=repo["id"], state="ready"):
            entry = entries.get(record["entry"])
            if entry is None or entry["sha256"] == record["sha256"]:
                continue
            new = {**record, **_meta(entry), "name": record["name"]}
            try:
                if users := self.references.described("os_template", record["id"]):
                    raise Conflict(f"used by {', '.join(users[:3])}")
                ctx.log(f"updating OS template {record['name']}")
                new.update(self._pipeline(ctx, new, self._downloader(repo, entry)))
                with self.store.locked():
                    if not (users := self.references.described("os_template", record["id"])):
                        self.store.update(TABLE, record["id"], new)
                if users:
                    self._delete_volume(new)
                    raise Conflict(f"used by {', '.join(users[:3])}")
            except PanelError as exc:
                kept.append({"template": record["name"], "reason": exc.message})
                continue
            self._delete_volume(record)
            updated.append(record["name"])
        return {"updated": updated, "kept": kept}

    # -- templates: upload ---------------------------------------------------------------
    def create_upload(self, body: Record, user: Record) -> Record:
        """Step 1 of an upload: the metadata (and storage); the record waits for its file."""
        validate(body, ost.UPLOAD_SCHEMA)
        access.check_upload(user, body)
        meta = {k: v for k, v in body.items() if k not in ("storage", "node")}
        record = self._reserve(meta, {"origin": "upload", "storage": body["storage"],
                                      "node": body.get("node"), "state": "uploading",
                                      "owner": access.owner_for(user)})
        self.events.emit("os_template.upload", record["id"], actor=user["id"],
                         name=record["name"])
        return record

    def receive_upload(self, template_id: str, stream: BinaryIO | None, length: int | None,
                       user: Record) -> Record:
        """Step 2: stream the file in (hashed, checked against ``sha256``), then the import
        task. A broken or wrong upload keeps nothing and may be sent again."""
        if stream is None or not length or length <= 0:
            raise BadRequest("send the file with a Content-Length", code="length_required")
        with self.store.locked():  # "receiving" keeps a second upload and deletes away
            record = self.require(template_id)
            access.require_own(record, user)
            if record["state"] != "uploading":
                raise Conflict(f"OS template {record['name']!r} is {record['state']}, not "
                               "waiting for its file", code="not_uploading")
            if record.get("size") not in (None, length):
                raise Invalid(f"the upload has {length} bytes, the metadata says "
                              f"{record['size']}", code="size_mismatch")
            self.store.update(TABLE, template_id, {"state": "receiving"})
        job = self.work / "jobs" / template_id
        try:
            job.mkdir(parents=True, exist_ok=True)
            digest = dl.receive(stream, job / "download", length, record.get("sha256"),
                                progress=dl.stage(lambda percent, _msg: self.store.update(
                                    TABLE, template_id, {"progress": percent}), 0, 100, ""))
        except BaseException:
            self.store.update(TABLE, template_id, {"state": "uploading", "progress": 0})
            raise
        self.store.update(TABLE, template_id, {"state": "importing", "sha256": digest,
                                               "size": length})
        return self._submit(record, user, lambda ctx, job: job / "download")

    # -- templates: delete ---------------------------------------------------------------
    def _delete_volume(self, record: Record) -> None:
        storage = self.storages.get(record["storage"])
        if storage is None or not record.get("volume"):
            return
        online = record.get("node") in self.nodes.online_ids()
        node_id = self._node_for(storage, record["node"] if online else None)
        self.storages.backend(storage).delete_volume(self.nodes.connection(node_id).get(),
                                                     record["volume"])
        self.nodes.connection(node_id).changed()

    def delete(self, template_id: str, actor: str | None = None,
               user: Record | None = None) -> None:
        """Remove the template and its volume; 409 while VMs use it or it is importing."""
        record = self.require(template_id)
        access.require_own(record, user)
        if record["state"] in ("importing", "receiving"):
            raise Conflict(f"OS template {record['name']!r} is being imported", code="busy")
        self.references.refuse_if_used("os_template", template_id,
                                       f"OS template {record['name']!r}", "os_template_in_use")
        self._delete_volume(record)
        shutil.rmtree(self.work / "jobs" / template_id, ignore_errors=True)
        self.store.delete(TABLE, template_id)
        self.events.emit("os_template.delete", template_id, actor=actor, name=record["name"])
