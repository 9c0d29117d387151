"""Shared helpers: test-driver nodes, an in-process panel served over HTTP, a keep-alive
JSON client, a libvirt call counter, timing statistics and the result rows."""

from __future__ import annotations

import http.client
import inspect
import json
import math
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "bench-admin-password"
TINY_MIB = 16  # the smallest memory_mib a VM template may have

# The same node as tests/data/test-node.xml: a private test-driver node (never
# test:///default, whose state is shared by every connection in the process).
NODE_XML = """<node>
  <cpu>
    <mhz>2000</mhz>
    <model>test-cpu</model>
    <nodes>1</nodes>
    <sockets>1</sockets>
    <cores>2</cores>
    <threads>2</threads>
  </cpu>
  <memory>8388608</memory>
</node>
"""


class BenchError(RuntimeError):
    """A benchmark could not set up or measure what it needs."""


def write_node(path: Path, domains: Iterable[str] = ()) -> str:
    """Write a test-driver node file (optionally with inline domain XMLs); return its URI."""
    body = "".join(domains)
    path.write_text(NODE_XML.replace("</node>", body + "</node>"))
    return f"test://{path.resolve()}"


# -- results ---------------------------------------------------------------------------
@dataclass
class Row:
    metric: str
    value: str
    goal: str = ""
    ok: bool | None = None  # None: information only
    error: bool = False  # the benchmark could not run


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def could_not_run(self) -> bool:
        """True when the benchmark stopped with an error (an ERROR row)."""
        return any(row.error for row in self.rows)

    def info(self, metric: str, value: str) -> None:
        self.rows.append(Row(metric, value))

    def check(self, metric: str, value: str, goal: str, ok: bool) -> None:
        self.rows.append(Row(metric, value, goal, ok))

    def error(self, detail: str) -> None:
        """Record that the benchmark could not run; ``detail`` (a traceback) becomes a note."""
        self.rows.append(Row("benchmark run", "ERROR", "runs", False, error=True))
        self.notes.append(detail)

    def note(self, text: str) -> None:
        self.notes.append(text)


# -- timing ----------------------------------------------------------------------------
@dataclass
class Stats:
    n: int
    median: float
    p90: float
    min: float
    max: float

    def ms(self) -> str:
        return (f"median {fmt_ms(self.median)} (p90 {fmt_ms(self.p90)}, "
                f"min {fmt_ms(self.min)}, max {fmt_ms(self.max)}, n={self.n})")


def summarize(samples: list[float]) -> Stats:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return Stats(len(ordered), statistics.median(ordered), p90, ordered[0], ordered[-1])


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1000
    if ms < 1:
        return f"{ms:.3f} ms"
    if ms < 100:
        return f"{ms:.2f} ms"
    return f"{ms:.0f} ms"


def time_calls(func: Callable[[], Any], n: int, warmup: int = 3) -> Stats:
    for _ in range(warmup):
        func()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return summarize(samples)


# -- HTTP ------------------------------------------------------------------------------
class JsonClient:
    """A JSON client on one keep-alive ``http.client.HTTPConnection``."""

    def __init__(self, port: int, token: str | None = None, host: str = "127.0.0.1",
                 timeout: float = 60.0) -> None:
        self.host, self.port, self.token, self.timeout = host, port, token, timeout
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.reconnects = 0

    def raw(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                if attempt:
                    raise
                self.reconnects += 1
                continue
            if resp.will_close:
                self.reconnects += 1
            return resp.status, payload
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, body: Any = None,
             expect: tuple[int, ...] = (200,)) -> Any:
        status, payload = self.raw(method, path, body)
        parsed = json.loads(payload) if payload else None
        if status not in expect:
            raise BenchError(f"{method} {path} -> {status}: {payload[:300]!r}")
        return parsed

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> JsonClient:
        body = self.call("POST", "/api/v1/auth/login",
                         {"username": username, "password": password})
        return JsonClient(self.port, body["token"], self.host, self.timeout)

    def wait_tasks(self, task_ids: Iterable[str], timeout: float = 300.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        done = []
        for task_id in task_ids:
            while True:
                task = self.call("GET", f"/api/v1/tasks/{task_id}")
                if task["state"] in ("succeeded", "failed", "cancelled"):
                    if task["state"] != "succeeded":
                        raise BenchError(f"task {task_id} {task['state']}: {task.get('error')}")
                    done.append(task)
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"task {task_id} still {task['state']} after {timeout} s")
                time.sleep(0.02)
        return done

    def close(self) -> None:
        self.conn.close()


# -- the panel in this process ------------------------------------------------------------
_request = threading.local()


def in_request() -> bool:
    """True on a server thread while it handles an HTTP request of the benchmarked app."""
    return getattr(_request, "active", False)


class RequestMarker:
    """WSGI wrapper that marks the handling thread, so libvirt calls can be attributed."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        _request.active = True
        try:
            result = self.app(environ, start_response)
            try:
                return list(result)  # bodies can be lazy: produce them inside the mark
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            _request.active = False


class PanelHarness:
    """A Panel on a private test-driver node, served (waitress) in a thread."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.panel: Any = None
        self.server: Any = None
        self.port = 0

    def __enter__(self) -> PanelHarness:
        from hypervisor_panel.panel import Panel
        from hypervisor_panel.web.app import create_app
        from hypervisor_panel.web.server import serve_in_thread

        self.workdir.mkdir(parents=True, exist_ok=True)
        uri = write_node(self.workdir / "node.xml")
        self.panel = Panel(self.workdir / "data", local_uri=uri,
                           default_storage_path=str(self.workdir / "images"))
        try:
            self.panel.start(admin_password=ADMIN_PASSWORD)
            self.server, self.port = serve_in_thread(RequestMarker(create_app(self.panel)))
        except BaseException:
            self.panel.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()
        self.panel.close()

    def client(self) -> JsonClient:
        return JsonClient(self.port).login()

    def node_id(self) -> str:
        nodes = self.panel.store.all("nodes")
        return nodes[0]["id"]


def tiny_template(client: JsonClient, count: int) -> tuple[str, float]:
    """Make room for ``count`` VMs through the public API; return (template id, overcommit).

    Creates a ``bench-tiny`` VM template (the smallest memory the API allows) and, when
    ``count`` of them do not fit in the largest node's RAM, raises the cluster's
    ``memory_overcommit`` just enough (placement refuses a VM that does not fit).
    """
    template = client.call("POST", "/api/v1/vm-templates", {
        "name": "bench-tiny", "memory_mib": TINY_MIB, "vcpus": 1, "disk_gib": 1},
        expect=(201,))
    nodes = client.call("GET", "/api/v1/nodes")["items"]
    ram = max((n.get("resources") or {}).get("memory_mib") or 0 for n in nodes)
    if not ram:
        raise BenchError("no node reports its RAM")
    needed = math.ceil(count * TINY_MIB / ram * 10) / 10
    ratio = client.call("GET", "/api/v1/settings")["memory_overcommit"]
    if needed > ratio:
        ratio = client.call("PATCH", "/api/v1/settings",
                            {"memory_overcommit": needed})["memory_overcommit"]
        if ratio < needed:
            raise BenchError(f"memory_overcommit is {ratio}, {count} VMs need {needed}")
    return template["id"], ratio


def template_id(client: JsonClient, name: str = "small") -> str:
    items = client.call("GET", "/api/v1/vm-templates")["items"]
    for item in items:
        if item["name"] == name:
            return item["id"]
    raise BenchError(f"no VM template named {name!r}")


def create_vms(client: JsonClient, names: Iterable[str], template: str) -> list[str]:
    """Create VMs through the API (202 + task each) and wait for all; return VM ids."""
    task_ids = []
    for name in names:
        body = client.call("POST", "/api/v1/vms", {"name": name, "vm_template": template},
                           expect=(202,))
        task_ids.append(body["task"]["id"])
    return [t["result"]["vm"] for t in client.wait_tasks(task_ids)]


# -- libvirt call counting ---------------------------------------------------------------
class LibvirtCallCounter:
    """Counts calls to the public methods of libvirt-python's classes (virConnect,
    virDomain, virStoragePool, ...), split into calls made while handling an HTTP request
    of the benchmarked app and calls made by other threads (event loop, node watcher).
    Only outermost calls are counted (a method calling another counts once)."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.background: Counter[str] = Counter()
        self._saved: list[tuple[type, str, Any]] = []
        self._depth = threading.local()
        self._lock = threading.Lock()

    def _classes(self) -> list[type]:
        import libvirt

        out = []
        for name in dir(libvirt):
            obj = getattr(libvirt, name)
            if (name.startswith("vir") and isinstance(obj, type)
                    and not issubclass(obj, BaseException)):
                out.append(obj)
        return out

    def install(self) -> LibvirtCallCounter:
        for cls in self._classes():
            for attr, func in list(vars(cls).items()):
                if attr.startswith("_") or not inspect.isfunction(func):
                    continue
                self._saved.append((cls, attr, func))
                setattr(cls, attr, self._wrap(f"{cls.__name__}.{attr}", func))
        return self

    def uninstall(self) -> None:
        for cls, attr, func in reversed(self._saved):
            setattr(cls, attr, func)
        self._saved.clear()

    def __enter__(self) -> LibvirtCallCounter:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.background.clear()

    def _wrap(self, label: str, func: Callable) -> Callable:
        depth = self._depth
        counter = self

        def counted(*args: Any, **kwargs: Any) -> Any:
            level = getattr(depth, "n", 0)
            if level == 0:
                with counter._lock:
                    (counter.requests if in_request() else counter.background)[label] += 1
            depth.n = level + 1
            try:
                return func(*args, **kwargs)
            finally:
                depth.n = level

        counted.__wrapped__ = func  # type: ignore[attr-defined]
        return counted


def top(counter: Counter[str], n: int = 5) -> str:
    if not counter:
        return "none"
    return ", ".join(f"{k} x{v}" for k, v in counter.most_common(n))
