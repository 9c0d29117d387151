"""A tiny JSON HTTP client for tests (stdlib only)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body!r}>"


class Client:
    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        data = raw
        hdrs = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if self.token:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, payload, rh = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            status, payload, rh = err.code, err.read(), dict(err.headers)
        if "json" not in rh.get("Content-Type", ""):
            return Response(status, payload, rh)
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode(errors="replace")
        return Response(status, parsed, rh)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)

    def login(self, username: str, password: str) -> Client:
        resp = self.post("/api/v1/auth/login", {"username": username, "password": password})
        assert resp.status == 200, resp
        return Client(self.base, resp.body["token"])

    def wait_task(self, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            resp = self.get(f"/api/v1/tasks/{task_id}")
            assert resp.status == 200, resp
            if resp.body["state"] in ("succeeded", "failed", "cancelled"):
                return resp.body
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {resp.body['state']}: {resp.body}")
            time.sleep(0.05)

    def run(
        self,
        method: str,
        path: str,
        body: Any = None,
        expect: str = "succeeded",
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """Submit a 202 operation and wait for its task to end in ``expect``."""
        resp = self.request(method, path, body)
        assert resp.status == 202, resp
        task = self.wait_task(resp.body["task"]["id"], timeout)
        assert task["state"] == expect, task
        return task
