"""Hostile HTTP against a really served panel: the server holds, and every answer is safe.

* Slow clients (a byte every few seconds) and idle keep-alive clients hold connections, not
  workers: ``/health`` keeps answering at once while 64 of them are connected.
* Bodies: larger than the route accepts is a 413 in the JSON shape, sent as soon as the
  headers are in (the body is never read: a 50 MB anonymous login leaves the server's
  memory as it was); uploads have their own, larger limit.
* JSON nested 1,000 deep is a 400; NaN, infinities and integers beyond 2**53 are a 422
  naming the field, and change nothing; every request schema bounds its numbers.
* Every answer carries the security headers: 2xx, 3xx, 4xx, 5xx, streamed, static, and the
  ones the server writes itself. A stream that fails mid-way is cut and logged.
* Over HTTPS the same holds (the TLS handshake runs in the server's loop, not a worker).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypervisor_panel.panel import Panel
from hypervisor_panel.routes import ApiRequest, RouteTable, Stream, created
from hypervisor_panel.web import server as http_server
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.glue import CSP
from hypervisor_panel.web.server import serve_in_thread
from tests.conftest import ADMIN_PASSWORD, node_uri_for
from tests.support.api import assert_error
from tests.support.client import Client
from tests.support.servers import self_signed
from tests.support.slow import slow_clients

ROOT = Path(__file__).resolve().parent.parent
SECURITY = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
MIB = 1024 * 1024
FAST = 2.0  # s: what "answers at once" means here, on a loaded CI machine too


# -- a panel with a few routes that misbehave on purpose ----------------------------------
def _test_routes(state: dict[str, Any]) -> RouteTable:
    table = RouteTable(owner="hostile-test")

    @table.route("/test/crash", summary="Raises", role="public")
    def crash(req: ApiRequest) -> None:
        raise RuntimeError("crashed on purpose")

    @table.route("/test/stream", summary="A stream that may fail", role="public",
                 query=(), response={"type": "string", "format": "binary"})
    def stream(req: ApiRequest) -> Stream:
        fail = req.headers.get("X-Fail")
        sized = req.headers.get("X-Sized") == "1"

        def chunks() -> Iterator[bytes]:
            try:
                if fail == "first":
                    raise RuntimeError("failed before the first byte")
                for _ in range(3):
                    yield b"x" * 65536
                if fail == "mid":
                    raise OSError("the disk went away")
            finally:
                state["stream_closed"] = True

        return Stream(chunks(), length=4 * 65536 if sized else None, filename="x.bin")

    @table.route("/test/big", summary="A long stream", role="public",
                 response={"type": "string", "format": "binary"})
    def big(req: ApiRequest) -> Stream:
        def chunks() -> Iterator[bytes]:
            try:
                for _ in range(256):
                    yield b"\0" * MIB
            finally:
                state["big_closed"] = True

        return Stream(chunks())

    @table.route("/test/upload", "PUT", summary="Counts a raw body", role="public",
                 raw_body=True, max_body=4096)
    def small_upload(req: ApiRequest) -> dict[str, int]:
        return {"read": len(req.stream.read())}  # type: ignore[union-attr]

    @table.route("/test/big-upload", "PUT", summary="Counts a raw body", role="public",
                 raw_body=True)
    def big_upload(req: ApiRequest):
        total = 0
        while chunk := req.stream.read(MIB):  # type: ignore[union-attr]
            total += len(chunk)
        return created({"read": total})

    return table


@pytest.fixture
def hostile(panel: Panel) -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {}
    panel.routes.extend(_test_routes(state))
    srv, port = serve_in_thread(create_app(panel))
    base = f"http://127.0.0.1:{port}"
    try:
        yield {"port": port, "base": base, "state": state, "panel": panel,
               "admin": Client(base).login("admin", ADMIN_PASSWORD), "anon": Client(base)}
    finally:
        srv.stop()


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def _health(port: int, timeout: float = 10) -> float:
    """Seconds GET /api/v1/health took on a new connection (it must answer 200)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/api/v1/health")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    finally:
        conn.close()
    return time.monotonic() - started


def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` on a new connection and read the whole answer (until it closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def _one_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer (head and Content-Length body), however the server's writes
    are split into segments."""
    out = b""
    while b"\r\n\r\n" not in out and (chunk := sock.recv(65536)):
        out += chunk
    head = {k.lower(): v for k, v in _headers_of(out).items()}
    length = int(head.get("content-length", "0"))
    while len(out.split(b"\r\n\r\n", 1)[1]) < length and (chunk := sock.recv(65536)):
        out += chunk
    return out


def _headers_of(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k: v.strip() for k, _, v in (line.partition(":") for line in head)}


def assert_secure(headers: dict[str, str], what: str) -> None:
    got = {k.lower(): v for k, v in headers.items()}
    for name, value in SECURITY.items():
        assert got.get(name.lower()) == value, f"{what}: {name} is {got.get(name.lower())!r}"


def _still_open(sock: socket.socket) -> bool:
    """The server has not closed ``sock`` (nothing to read, no EOF)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


# -- slow and idle clients ---------------------------------------------------------------
def test_health_answers_at_once_while_64_slow_clients_hold_connections(server: str):
    port = _port(server)
    with slow_clients(port, 64, every=3.0) as socks:
        time.sleep(0.5)  # every slow client is connected and has started its request
        times = []
        deadline = time.monotonic() + 8  # long enough for a few drips (1 byte / 3 s)
        while time.monotonic() < deadline:
            times.append(_health(port, timeout=FAST * 2))
            time.sleep(0.25)
        assert all(_still_open(s) for s in socks), "slow clients were dropped early"
    assert len(times) >= 10 and max(times) < FAST, times


def test_many_idle_keep_alive_clients_do_not_slow_the_others(server: str):
    port = _port(server)
    idle = []
    try:
        for _ in range(200):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/api/v1/health")
            response = conn.getresponse()
            response.read()
            assert response.status == 200 and not response.will_close
            idle.append(conn)
        times = sorted(_health(port) for _ in range(100))
        assert times[98] < 0.5 and times[-1] < FAST, times[-5:]
        for conn in idle[::20]:  # the idle ones are still served on their connection
            conn.request("GET", "/api/v1/health")
            response = conn.getresponse()
            assert response.status == 200, response.read()
            response.read()
    finally:
        for conn in idle:
            conn.close()


def test_a_request_whose_headers_do_not_arrive_in_time_is_dropped(
        monkeypatch: pytest.MonkeyPatch, server: str):
    monkeypatch.setattr(http_server, "HEADER_TIMEOUT", 1.0)
    monkeypatch.setattr(http_server, "BODY_GRACE", 1.0)
    with slow_clients(_port(server), 2, every=0.3) as socks:
        deadline = time.monotonic() + 10
        while any(_still_open(s) for s in socks) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_still_open(s) for s in socks)
    assert _health(_port(server)) < FAST


def test_a_reader_that_stalls_frees_its_worker(monkeypatch: pytest.MonkeyPatch,
                                               panel: Panel, caplog: pytest.LogCaptureFixture):
    monkeypatch.setattr(http_server, "IDLE_TIMEOUT", 1)
    state: dict[str, Any] = {}
    panel.routes.extend(_test_routes(state))
    srv, port = serve_in_thread(create_app(panel))
    try:
        with caplog.at_level(logging.INFO, logger="hypervisor_panel.web.server"), \
                socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /api/v1/test/big HTTP/1.1\r\nHost: x\r\n\r\n")
            deadline = time.monotonic() + 20  # 256 MiB never read: the worker blocks, then
            while not state.get("big_closed") and time.monotonic() < deadline:
                time.sleep(0.2)  # the stalled connection is closed and the stream too
        assert state.get("big_closed"), "the stalled download still holds its worker"
        assert "read nothing of its answer" in caplog.text
        assert _health(port) < FAST
    finally:
        srv.stop()


# -- body limits ---------------------------------------------------------------------------
def test_a_huge_anonymous_body_is_refused_before_it_is_read(server: str):
    port = _port(server)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 52428800\r\n\r\n")
        answer = _one_answer(sock)  # no body byte sent: the answer comes anyway
    assert time.monotonic() - started < FAST
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert_secure(_headers_of(answer), "413")
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "body_too_large"
    # A client that sends its whole body anyway still gets the answer (not a reset).
    resp = Client(server).post("/api/v1/auth/login", raw=b"{" + b" " * (50 * MIB) + b"}",
                               headers={"Content-Type": "application/json"})
    assert_error(resp, 413, "body_too_large")
    assert _health(port) < FAST


def test_a_chunked_body_is_refused_once_over_the_limit(server: str):
    chunk = b" " * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    answer = _raw(_port(server), b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + body)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"body_too_large"' in answer


def test_json_routes_take_1_mib_and_uploads_their_own_limit(hostile: dict[str, Any]):
    admin: Client = hostile["admin"]
    template = {"name": "t", "memory_mib": 64, "vcpus": 1, "disk_gib": 1}
    padded = json.dumps(template).encode()[:-1] + b" " * (MIB - 100) + b"}"
    assert admin.post("/api/v1/vm-templates", raw=padded,
                      headers={"Content-Type": "application/json"}).status == 201
    assert_error(admin.post("/api/v1/vm-templates", raw=padded + b" " * 200,
                            headers={"Content-Type": "application/json"}), 413,
                 "body_too_large")
    anon: Client = hostile["anon"]
    assert anon.request("PUT", "/api/v1/test/upload", raw=b"u" * 4096).body == {"read": 4096}
    assert_error(anon.request("PUT", "/api/v1/test/upload", raw=b"u" * 4097), 413,
                 "body_too_large")
    big = anon.request("PUT", "/api/v1/test/big-upload", raw=b"u" * (20 * MIB))
    assert big.status == 201 and big.body == {"read": 20 * MIB}


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1])  # type: ignore[index]


@contextlib.contextmanager
def served_panel(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """``python app.py serve`` in a process of its own (its memory is measurable)."""
    proc = subprocess.Popen(
        [sys.executable, "app.py", "serve", "--port", "0", "--data-dir",
         str(tmp_path / "data"), "--node-uri", node_uri_for(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HVP_ADMIN_PASSWORD": ADMIN_PASSWORD})
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.search(r"Hypervisor panel on http://127\.0\.0\.1:(\d+)/", line)
            if found:
                break
        else:
            pytest.fail("the panel did not start")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep it drained
        yield proc, int(found[1])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_eight_50_mb_anonymous_logins_leave_memory_as_it_was(tmp_path: Path):
    with served_panel(tmp_path) as (proc, port):
        for _ in range(3):
            _health(port)
        before = _rss_kib(proc.pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], _rss_kib(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        body = b'{"username": "admin", "password": "' + b"p" * (50 * 1000 * 1000) + b'"}'
        results: list[Any] = []

        def login() -> None:
            results.append(Client(f"http://127.0.0.1:{port}").post(
                "/api/v1/auth/login", raw=body, headers={"Content-Type": "application/json"}))

        started = time.monotonic()
        senders = [threading.Thread(target=login) for _ in range(8)]
        for t in senders:
            t.start()
        for t in senders:
            t.join(60)
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        assert [r.status for r in results] == [413] * 8, results
        grown_mib = (peak[0] - before) / 1024
        assert grown_mib < 32, f"RSS grew by {grown_mib:.0f} MiB ({before} KiB before)"
        assert elapsed < 30 and _health(port) < FAST


# -- JSON depth and numbers ---------------------------------------------------------------
@pytest.mark.parametrize("levels", [65, 1000, 100_000])
def test_deeply_nested_json_is_a_400(server: str, levels: int):
    anon, admin = Client(server), Client(server).login("admin", ADMIN_PASSWORD)
    deep = b'{"a":' * levels + b"1" + b"}" * levels
    for client, path in ((anon, "/api/v1/auth/login"), (admin, "/api/v1/settings")):
        resp = client.request("POST" if client is anon else "PATCH", path, raw=deep,
                              headers={"Content-Type": "application/json"})
        assert_error(resp, 400, "invalid_json")
        assert "Traceback" not in json.dumps(resp.body)
    nested_ok = b'{"name": "x", "password": "y", "z": ' + b"[" * 60 + b"]" * 60 + b"}"
    assert anon.post("/api/v1/auth/login", raw=nested_ok,
                     headers={"Content-Type": "application/json"}).status == 422


BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", str(2**64), str(-2**64),
               str(2**53)]


@pytest.mark.parametrize("number", BAD_NUMBERS)
def test_numbers_not_finite_or_out_of_range_are_a_422_and_change_nothing(admin: Client,
                                                                        number: str):
    ctype = {"Content-Type": "application/json"}
    settings = admin.get("/api/v1/settings").body
    resp = admin.patch("/api/v1/settings", raw=b'{"memory_overcommit": %s}' % number.encode(),
                       headers=ctype)
    assert_error(resp, 422)
    assert resp.body["error"]["details"][0]["field"] == "memory_overcommit"
    assert admin.get("/api/v1/settings").body == settings
    users = admin.get("/api/v1/users").body
    create = '{"name": "bob", "password": "bob-password-1", "quota": {"vms": NUMBER}}' \
        .replace("NUMBER", number)
    assert_error(admin.post("/api/v1/users", raw=create.encode(), headers=ctype), 422)
    alice = admin.post("/api/v1/users", {"name": "alice", "password": "alice-password-1"})
    assert alice.status == 201, alice
    patch = '{"quota": {"memory_mib": NUMBER}}'.replace("NUMBER", number)
    assert_error(admin.patch(f"/api/v1/users/{alice.body['id']}", raw=patch.encode(),
                             headers=ctype), 422)
    assert admin.get(f"/api/v1/users/{alice.body['id']}").body == alice.body
    assert admin.delete(f"/api/v1/users/{alice.body['id']}").status == 204
    assert admin.get("/api/v1/users").body == users
    post_vms = admin.post("/api/v1/vms", {"name": "n", "vm_template": "none"})
    assert post_vms.status in (404, 422), post_vms  # placement still works: no 500


def _unbounded(schema: Any, where: str) -> Iterator[str]:
    """Where ``schema`` takes an integer or number without a minimum and a maximum."""
    if isinstance(schema, list):
        for i, sub in enumerate(schema):
            yield from _unbounded(sub, f"{where}[{i}]")
        return
    if not isinstance(schema, dict):
        return
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    numeric = {"integer", "number"} & set(kinds) and not {"enum", "const"} & set(schema)
    if numeric and not ({"minimum", "exclusiveMinimum"} & set(schema)
                        and {"maximum", "exclusiveMaximum"} & set(schema)):
        yield where
    for key, sub in schema.items():
        if key in ("properties", "patternProperties", "$defs", "dependentSchemas"):
            for name, child in sub.items():
                yield from _unbounded(child, f"{where}.{name}")
        elif isinstance(sub, dict | list) and key not in ("enum", "const", "default",
                                                          "examples", "required"):
            yield from _unbounded(sub, f"{where}/{key}")


def test_every_number_a_request_takes_has_bounds(admin: Client, panel: Panel):
    spec = admin.get("/api/v1/openapi.json").body
    found, bodies = [], 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for param in op.get("parameters", []):
                found += _unbounded(param["schema"], f"{method} {path} ?{param['name']}")
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                bodies += 1
                found += _unbounded(content["application/json"]["schema"],
                                    f"{method} {path} body")
    assert bodies > 40
    registry = panel.registry
    for kind in ("storage_backends", "network_modes", "backup_targets",
                 "os_template_sources", "recipe_sources"):
        plugins = getattr(registry, kind)
        for name, plugin in (plugins.items() if hasattr(plugins, "items") else
                             ((getattr(p, "name", p), p) for p in plugins)):
            found += _unbounded(getattr(plugin, "options_schema", None) or {},
                                f"{kind} {name} options")
    assert not found, "\n".join(found)


# -- security headers everywhere, streams that fail ---------------------------------------
def test_every_answer_carries_the_security_headers(hostile: dict[str, Any]):
    admin, anon, port = hostile["admin"], hostile["anon"], hostile["port"]
    template = {"name": "hdr", "memory_mib": 64, "vcpus": 1, "disk_gib": 1}
    answers = {
        "200": anon.get("/api/v1/health"),
        "201": admin.post("/api/v1/vm-templates", template),
        "400": admin.post("/api/v1/vm-templates", raw=b"{", headers={
            "Content-Type": "application/json"}),
        "401": anon.get("/api/v1/vms"),
        "404 api": admin.get("/api/v1/nope"),
        "404 page": anon.get("/no-such-page"),
        "405": admin.request("PUT", "/api/v1/vms"),
        "413": anon.post("/api/v1/auth/login", raw=b" " * (2 * MIB),
                         headers={"Content-Type": "application/json"}),
        "422": admin.post("/api/v1/vm-templates", {**template, "vcpus": 0}),
        "500": anon.get("/api/v1/test/crash"),
        "500 stream": anon.get("/api/v1/test/stream", headers={"X-Fail": "first"}),
        "streamed": anon.get("/api/v1/test/stream"),
        "static": anon.get("/static/panel.css"),
        "login page": anon.get("/login"),
    }
    made = answers["201"].body
    answers["204"] = admin.delete(f"/api/v1/vm-templates/{made['id']}")
    statuses = {what: r.status for what, r in answers.items()}
    assert statuses == {"200": 200, "201": 201, "204": 204, "400": 400, "401": 401,
                        "404 api": 404, "404 page": 404, "405": 405, "413": 413,
                        "422": 422, "500": 500, "500 stream": 500, "streamed": 200,
                        "static": 200, "login page": 200}, statuses
    for what, resp in answers.items():
        assert_secure(resp.headers, what)
        if resp.status >= 400 and what != "404 page":
            assert_error(resp, resp.status)
    assert answers["streamed"].body == b"x" * 3 * 65536
    redirect = _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert redirect.startswith((b"HTTP/1.1 302 ", b"HTTP/1.1 303 ")), redirect[:100]
    assert_secure(_headers_of(redirect), "302")
    malformed = _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert b" 400 " in malformed.split(b"\r\n", 1)[0], malformed[:200]  # from waitress
    assert_secure(_headers_of(malformed), "malformed request")
    assert b'"error"' in malformed and b"Traceback" not in malformed


@pytest.mark.parametrize("sized", [False, True], ids=["chunked", "content-length"])
def test_a_stream_that_fails_mid_way_is_cut_and_logged(hostile: dict[str, Any], sized: bool,
                                                       caplog: pytest.LogCaptureFixture):
    port = hostile["port"]
    with caplog.at_level(logging.INFO):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/v1/test/stream",
                     headers={"X-Fail": "mid", "X-Sized": "1" if sized else "0"})
        response = conn.getresponse()
        assert response.status == 200
        assert_secure(dict(response.getheaders()), "stream")
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        conn.close()
        assert cut.value.partial == b"x" * 3 * 65536  # what was sent, nothing more
        assert b"Traceback" not in cut.value.partial
        deadline = time.monotonic() + 5
        while not hostile["state"].get("stream_closed") and time.monotonic() < deadline:
            time.sleep(0.05)
    assert hostile["state"]["stream_closed"]
    failed = [r for r in caplog.records if "the stream failed after" in r.getMessage()]
    assert failed and "the disk went away" in failed[0].getMessage(), caplog.text
    assert "GET /api/v1/test/stream" in failed[0].getMessage()
    assert "Exception while serving" not in caplog.text  # handled, not a server crash
    assert _health(port) < FAST


# -- the same over HTTPS --------------------------------------------------------------------
def _tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for a fresh self-signed certificate of 127.0.0.1."""
    cert_path, key_path = self_signed(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    client.check_hostname = False
    return server, client


def test_over_https_slow_clients_big_bodies_and_streams_behave_the_same(
        panel: Panel, tmp_path: Path):
    state: dict[str, Any] = {}
    panel.routes.extend(_test_routes(state))
    server_ctx, client_ctx = _tls_contexts(tmp_path)
    srv = http_server.make_server(create_app(panel), "127.0.0.1", 0)
    srv.use_tls(server_ctx)
    srv.prepare()
    port = srv.bind_addr[1]
    threading.Thread(target=srv.serve, daemon=True).start()

    def call(method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=20, context=client_ctx)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]  # no hello
    try:
        with slow_clients(port, 32, every=3.0):  # plain bytes at a TLS port: refused
            started = time.monotonic()
            status, headers, _ = call("GET", "/api/v1/health")
            assert status == 200 and time.monotonic() - started < FAST
        assert_secure(headers, "https")
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        assert call("PUT", "/api/v1/test/big-upload", b"u" * (20 * MIB))[::2] == \
            (201, b'{"read":20971520}')
        status, _, body = call("GET", "/api/v1/test/big")
        assert status == 200 and len(body) == 256 * MIB
        status, _, body = call("POST", "/api/v1/auth/login", b" " * (4 * MIB),
                               {"Content-Type": "application/json"})
        assert status == 413 and b"body_too_large" in body
    finally:
        for sock in stalled:
            sock.close()
        srv.stop()
