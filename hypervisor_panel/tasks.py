"""Persisted long operations: state, progress, log, error, result; a worker pool runs them.

Tasks live in the store, so a restart never drops one silently: tasks that were queued or
running when the panel stopped are marked failed ("interrupted") by ``recover()``.
A lock key (usually ``vm:<id>``) lets at most one task act on an object at a time; a second
submission is refused with 409 instead of racing the first.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import Conflict, NotFound, PanelError
from .store import Store, new_id

log = logging.getLogger(__name__)

TABLE = "tasks"
ACTIVE = ("queued", "running")
MAX_LOG_LINES = 200


class TaskCancelled(Exception):
    """Raised inside a task body when the task was cancelled."""

    code = "cancelled"


class TaskContext:
    """Handed to a task body to report progress and log lines."""

    def __init__(self, manager: TaskManager, task_id: str) -> None:
        self._manager = manager
        self.task_id = task_id

    def progress(self, percent: int, message: str | None = None) -> None:
        fields: dict[str, Any] = {"progress": max(0, min(100, int(percent)))}
        self._manager._update(self.task_id, fields, message)

    def log(self, message: str) -> None:
        self._manager._update(self.task_id, {}, message)

    def detail(self, percent: int, **fields: Any) -> None:
        """Progress plus machine-readable detail (bytes done and total, throughput)
        without a log line: for frequent updates of long transfers."""
        self._manager._update(self.task_id, {"progress": max(0, min(100, int(percent))),
                                             "detail": fields}, None)

    @property
    def cancelled(self) -> bool:
        return self.task_id in self._manager._cancel_requested

    def check_cancelled(self) -> None:
        """Raise TaskCancelled when cancel was asked; call it between steps."""
        if self.cancelled:
            raise TaskCancelled()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when the task is cancelled (e.g. abort a libvirt job that
        blocks the body); returns a function that unregisters it."""
        return self._manager._watch_cancel(self.task_id, callback)


TaskBody = Callable[[TaskContext], Any]


class TaskManager:
    """Runs task bodies on a thread pool and keeps their records current in the store."""

    def __init__(
        self,
        store: Store,
        workers: int = 4,
        on_finish: Callable[[dict], None] | None = None,
    ) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hvp-task")
        self._locks: dict[str, str] = {}
        self._locks_guard = threading.Lock()
        self._done: dict[str, threading.Event] = {}
        self._cancel_requested: set[str] = set()
        self._futures: set[futures.Future] = set()
        self._on_finish = on_finish
        self._cancel_callbacks: dict[str, list[Callable[[], None]]] = {}

    def recover(self) -> int:
        """Mark tasks left queued/running by a previous process as failed; return how many."""
        count = 0
        for task in self.store.find(TABLE, predicate=lambda t: t.get("state") in ACTIVE):
            self.store.update(
                TABLE,
                task["id"],
                {
                    "state": "failed",
                    "error": {
                        "code": "interrupted",
                        "message": "the panel stopped while this task was running",
                    },
                    "finished": time.time(),
                },
            )
            count += 1
        return count

    def busy(self, lock_key: str) -> str | None:
        """The id of the task holding ``lock_key``, if any."""
        with self._locks_guard:
            return self._locks.get(lock_key)

    def submit(
        self,
        kind: str,
        body: TaskBody,
        *,
        title: str,
        owner: str | None = None,
        lock_key: str | None = None,
        subject: str | None = None,
    ) -> dict[str, Any]:
        """Persist a queued task and schedule ``body``; 409 if ``lock_key`` is held."""
        task_id = new_id()
        with self._locks_guard:
            if lock_key is not None:
                holder = self._locks.get(lock_key)
                if holder is not None:
                    raise Conflict(
                        f"{lock_key} is busy with task {holder}; wait for it to finish",
                        code="busy",
                    )
                self._locks[lock_key] = task_id
        task = {
            "id": task_id,
            "name": title,
            "kind": kind,
            "subject": subject,
            "owner": owner,
            "state": "queued",
            "progress": 0,
            "log": [],
            "error": None,
            "result": None,
            "created": time.time(),
            "started": None,
            "finished": None,
        }
        self.store.insert(TABLE, task)
        self._done[task_id] = threading.Event()
        future = self._pool.submit(self._run, task_id, body, lock_key)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return task

    def _run(self, task_id: str, body: TaskBody, lock_key: str | None) -> None:
        ctx = TaskContext(self, task_id)
        try:
            if ctx.cancelled:
                raise TaskCancelled()
            self._update(task_id, {"state": "running", "started": time.time()}, None)
            result = body(ctx)
            final = {"state": "succeeded", "progress": 100, "result": result}
        except TaskCancelled:
            final = {"state": "cancelled", "error": {"code": "cancelled", "message": "cancelled"}}
        except PanelError as exc:
            final = {"state": "failed", "error": exc.to_dict()["error"]}
        except Exception as exc:  # a task must end with a clear error, whatever happened
            log.error("task %s failed:\n%s", task_id, traceback.format_exc())
            final = {
                "state": "failed",
                "error": {"code": "task_failed", "message": _clean_message(exc)},
            }
        final["finished"] = time.time()
        with self._locks_guard:
            if lock_key is not None and self._locks.get(lock_key) == task_id:
                del self._locks[lock_key]
        record = self._update(task_id, final, None)
        self._cancel_requested.discard(task_id)
        with self._locks_guard:
            self._cancel_callbacks.pop(task_id, None)
        event = self._done.pop(task_id, None)
        if event:
            event.set()
        if self._on_finish and record:
            try:
                self._on_finish(record)
            except Exception:
                log.exception("task finish hook failed")

    def _update(self, task_id: str, fields: dict[str, Any], message: str | None) -> dict | None:
        with self.store.locked():
            task = self.store.get(TABLE, task_id)
            if task is None:
                return None
            if message:
                lines = [*task.get("log", []), f"{time.strftime('%H:%M:%S')} {message}"]
                fields = {**fields, "log": lines[-MAX_LOG_LINES:]}
            return self.store.update(TABLE, task_id, fields)

    def cancel(self, task_id: str) -> None:
        """Ask a task to stop; bodies honour it between steps (``check_cancelled``) and
        through their ``on_cancel`` callbacks."""
        task = self.store.require(TABLE, task_id, "task")
        if task["state"] not in ACTIVE:
            raise Conflict(f"task {task_id} already {task['state']}", code="task_finished")
        with self._locks_guard:
            self._cancel_requested.add(task_id)
            callbacks = list(self._cancel_callbacks.get(task_id, []))
        if task["state"] == "running":
            self._update(task_id, {}, "cancel requested")
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a cancel callback of task %s failed", task_id)

    def _watch_cancel(self, task_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        with self._locks_guard:
            self._cancel_callbacks.setdefault(task_id, []).append(callback)

        def forget() -> None:
            with self._locks_guard:
                found = self._cancel_callbacks.get(task_id, [])
                if callback in found:
                    found.remove(callback)
        return forget

    # -- views -------------------------------------------------------------------------
    def visible(self, user: dict[str, Any], state: str | None = None,
                subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Tasks ``user`` may see (admins: all), newest first, optionally filtered."""
        admin = user.get("role") == "admin"
        with self.store.locked():
            items = [dict(t) for t in self.store.raw_values(TABLE)
                     if (admin or t.get("owner") == user["id"])
                     and (not state or t["state"] == state)
                     and (not subject or t.get("subject") == subject)]
        items.sort(key=lambda t: t["created"], reverse=True)
        return items[:limit]

    def get_for(self, task_id: str, user: dict[str, Any]) -> dict[str, Any]:
        """One task, 404 unless ``user`` may see it."""
        task = self.store.get(TABLE, task_id)
        if task is None or (user.get("role") != "admin" and task.get("owner") != user["id"]):
            raise NotFound(f"task {task_id!r} not found", code="task_not_found")
        return task

    def cancel_for(self, task_id: str, user: dict[str, Any]) -> dict[str, Any]:
        """Cancel a task ``user`` may see; returns it."""
        self.get_for(task_id, user)
        self.cancel(task_id)
        return self.get(task_id)

    def get(self, task_id: str) -> dict[str, Any]:
        return self.store.require(TABLE, task_id, "task")

    def wait(self, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Block until the task ends (for the CLI and tests); returns its record."""
        event = self._done.get(task_id)
        if event is not None:
            event.wait(timeout)
        return self.get(task_id)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Drop queued tasks (marked interrupted at the next start) and let running ones end.

        Waits at most ``timeout`` seconds, so connections are not closed under a task.
        """
        self._pool.shutdown(wait=False, cancel_futures=True)
        futures.wait(list(self._futures), timeout=timeout)


def _clean_message(exc: BaseException) -> str:
    """A one-line message for users (libvirt errors keep their own text)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
