"""Authentication hardening (issue 12, section 2) against a served panel on a test-driver node.

Throttling, token listing/revocation/expiry, scoped tokens, revocation on password change,
logout everywhere, session rotation, login CSRF, hashed secrets at rest, file modes,
argon2id hashes and their upgrade, HTTPS with HSTS. Clocks are moved, never waited for. Browser fixtures come from tests/support/browser.py,
imported by name (hence F811 below).
"""
# ruff: noqa: F811

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from hypervisor_panel.auth import Auth
from hypervisor_panel.auth_passwords import (
    hash_password,
    legacy_scrypt_hash,
    needs_rehash,
    verify_password,
)
from hypervisor_panel.auth_throttle import LoginThrottle, address_key
from hypervisor_panel.auth_tokens import TOKENS, token_hash
from hypervisor_panel.panel import Panel
from hypervisor_panel.store import Store
from tests.conftest import ADMIN_PASSWORD, node_uri_for
from tests.support.api import assert_error, small_template
from tests.support.browser import (  # noqa: F401  (fixtures are used by name)
    browser_context_args,
    browser_type_launch_args,
    js_errors,
    sign_in,
)
from tests.support.client import Client
from tests.support.servers import self_signed

ROOT = Path(__file__).resolve().parents[1]
LOGIN = "/api/v1/auth/login"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clocks(panel: Panel) -> tuple[Clock, Clock]:
    """(throttle clock, token clock) of the served panel."""
    throttle, tokens = Clock(1000.0), Clock(time.time())
    panel.auth.throttle.clock = throttle
    panel.auth.tokens.clock = tokens
    return throttle, tokens


ALICE_PASSWORD = "alice-password"


def add_user(admin: Client, name: str = "alice", password: str = ALICE_PASSWORD) -> str:
    resp = admin.post("/api/v1/users", {"name": name, "password": password, "role": "user"})
    assert resp.status == 201, resp
    return resp.body["id"]


def login_as(anon: Client, name: str, password: str):
    return anon.post(LOGIN, {"username": name, "password": password})


# -- throttling ---------------------------------------------------------------------------
def test_fifty_wrong_passwords_lock_the_user_until_the_window_passes(
        anon: Client, panel: Panel, clocks: tuple[Clock, Clock]):
    throttle_clock, _ = clocks
    panel.auth.throttle.lockout = 120
    statuses = [login_as(anon, "admin", f"wrong-{i}").status for i in range(50)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    locked = login_as(anon, "admin", ADMIN_PASSWORD)  # the right password, still refused
    assert_error(locked, 429, "too_many_attempts")
    retry = int(locked.headers["Retry-After"])
    assert 1 <= retry <= 120 and locked.body["error"]["details"]["retry_after"] == retry
    throttle_clock.advance(retry - 1)
    assert_error(login_as(anon, "admin", ADMIN_PASSWORD), 429)
    throttle_clock.advance(1)
    assert login_as(anon, "admin", ADMIN_PASSWORD).status == 200
    # The success reset the user's count: four more failures do not lock.
    assert [login_as(anon, "admin", "x").status for _ in range(4)] == [401] * 4
    assert login_as(anon, "admin", ADMIN_PASSWORD).status == 200


def test_lockouts_grow_and_unknown_users_are_throttled_alike(
        anon: Client, panel: Panel, clocks: tuple[Clock, Clock]):
    throttle_clock, _ = clocks
    panel.auth.throttle.lockout = 10
    waits = []
    for _ in range(3):
        for _ in range(5):
            login_as(anon, "nobody", "x")
        resp = login_as(anon, "nobody", "x")
        assert_error(resp, 429, "too_many_attempts")
        waits.append(int(resp.headers["Retry-After"]))
        throttle_clock.advance(waits[-1])
    assert waits == [10, 20, 40]  # exponential back-off


def test_one_address_spraying_many_users_is_locked(anon: Client, admin: Client,
                                                   panel: Panel, clocks: tuple[Clock, Clock]):
    add_user(admin, "bob", "bob-password")
    for i in range(panel.auth.throttle.address_limit.max_failures):
        assert login_as(anon, f"user{i}", "guess").status == 401
    assert_error(login_as(anon, "bob", "bob-password"), 429, "too_many_attempts")


def test_the_throttle_is_bounded_and_counts_ipv6_per_64():
    throttle = LoginThrottle(max_entries=100, clock=Clock(0.0))
    for i in range(1000):
        throttle.failure(throttle.keys(f"user{i}", f"10.0.{i // 250}.{i % 250}"))
    assert len(throttle) <= 100
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:1234") == \
        "addr:2001:db8::/64"
    assert address_key("::ffff:10.1.2.3") == "addr:10.1.2.3"
    assert address_key(None) is None


def test_x_forwarded_for_does_not_escape_the_address_limit(anon: Client, panel: Panel,
                                                           clocks: tuple[Clock, Clock]):
    for i in range(panel.auth.throttle.address_limit.max_failures):
        anon.post(LOGIN, {"username": f"u{i}", "password": "x"},
                  headers={"X-Forwarded-For": f"203.0.113.{i}"})
    assert_error(login_as(anon, "admin", ADMIN_PASSWORD), 429)


# -- tokens: listed, revocable, expiring ------------------------------------------------
def test_every_token_is_listed_and_revocable(anon: Client, admin: Client):
    other = anon.login("admin", ADMIN_PASSWORD)
    api = admin.post("/api/v1/tokens", {"name": "ci"}).body
    items = admin.get("/api/v1/tokens").body["items"]
    assert {t["kind"] for t in items} == {"login", "api"} and len(items) == 3
    assert [t["current"] for t in items].count(True) == 1
    assert all("hash" not in t and "token" not in t and "csrf" not in t for t in items)
    assert all(t["expires"] > time.time() for t in items)
    login_ids = [t["id"] for t in items if t["kind"] == "login" and not t["current"]]
    assert admin.delete(f"/api/v1/tokens/{login_ids[0]}").status == 204
    assert_error(other.get("/api/v1/auth/me"), 401, "invalid_token")
    assert admin.delete(f"/api/v1/tokens/{api['id']}").status == 204
    assert_error(Client(anon.base, api["token"]).get("/api/v1/auth/me"), 401)
    assert_error(admin.delete(f"/api/v1/tokens/{api['id']}"), 404)


def test_admins_list_and_revoke_a_users_tokens_users_only_their_own(anon: Client,
                                                                    admin: Client):
    alice_id = add_user(admin)
    alice = anon.login("alice", "alice-password")
    mine = alice.get("/api/v1/tokens").body["items"]
    assert [t["user"] for t in mine] == [alice_id]
    admin_id = admin.get("/api/v1/auth/me").body["id"]
    assert_error(alice.get(f"/api/v1/tokens?user={admin_id}"), 403)
    admin_token = admin.get("/api/v1/tokens").body["items"][0]["id"]
    assert_error(alice.delete(f"/api/v1/tokens/{admin_token}"), 404)
    listed = admin.get(f"/api/v1/tokens?user={alice_id}").body["items"]
    assert [t["id"] for t in listed] == [mine[0]["id"]]
    assert admin.delete(f"/api/v1/tokens/{mine[0]['id']}").status == 204
    assert_error(alice.get("/api/v1/vms"), 401)


def test_login_tokens_expire_when_idle_and_at_their_absolute_end(
        anon: Client, admin: Client, clocks: tuple[Clock, Clock]):
    _, token_clock = clocks
    idle = anon.login("admin", ADMIN_PASSWORD)
    busy = anon.login("admin", ADMIN_PASSWORD)
    for _ in range(15):  # used every 11 h (inside 12 h idle): 165 h, not yet 7 days
        token_clock.advance(11 * 3600)
        assert busy.get("/api/v1/auth/me").status == 200
    assert_error(idle.get("/api/v1/auth/me"), 401, "invalid_token")  # unused > 12 h
    token_clock.advance(4 * 3600)  # 169 h after login: past the absolute limit
    assert_error(busy.get("/api/v1/auth/me"), 401, "invalid_token")


def test_api_tokens_expire_after_their_days_and_have_a_maximum(
        anon: Client, admin: Client, clocks: tuple[Clock, Clock]):
    _, token_clock = clocks
    default = admin.post("/api/v1/tokens", {"name": "default"}).body
    assert default["expires"] == pytest.approx(token_clock.now + 90 * 86400)
    short = admin.post("/api/v1/tokens", {"name": "short", "expires_in_days": 1}).body
    assert_error(admin.post("/api/v1/tokens", {"expires_in_days": 366}), 422)
    assert_error(admin.post("/api/v1/tokens", {"expires_in_days": 0}), 422)
    client = Client(anon.base, short["token"])
    token_clock.advance(86400 - 60)
    assert client.get("/api/v1/auth/me").status == 200  # API tokens have no idle limit
    token_clock.advance(61)
    assert_error(client.get("/api/v1/auth/me"), 401, "invalid_token")
    assert_error(admin.get("/api/v1/auth/me"), 401)  # the login token was idle for 24 h
    listed = anon.login("admin", ADMIN_PASSWORD).get("/api/v1/tokens").body["items"]
    assert {t["id"] for t in listed} >= {default["id"]} and short["id"] not in \
        {t["id"] for t in listed}


# -- scoped tokens ------------------------------------------------------------------------
def test_a_read_only_token_reads_and_changes_nothing(anon: Client, admin: Client):
    token = admin.post("/api/v1/tokens", {"name": "ro", "scope": "read"}).body
    assert token["scope"] == "read"
    ro = Client(anon.base, token["token"])
    assert ro.get("/api/v1/vms").status == 200 and ro.get("/api/v1/users").status == 200
    body = {"name": "x", "memory_mib": 64, "vcpus": 1, "disk_gib": 1}
    assert_error(ro.post("/api/v1/vm-templates", body), 403, "token_scope")
    assert_error(ro.post("/api/v1/tokens", {"name": "escalate"}), 403, "token_scope")
    assert_error(ro.delete(f"/api/v1/tokens/{token['id']}"), 403, "token_scope")
    assert_error(ro.post("/api/v1/auth/logout-everywhere"), 403, "token_scope")
    assert "x" not in [t["name"] for t in admin.get("/api/v1/vm-templates").body["items"]]
    assert ro.post("/api/v1/auth/logout").status == 200  # it may revoke itself
    assert_error(ro.get("/api/v1/vms"), 401)


def test_a_vm_scoped_token_sees_and_acts_on_its_vm_only(anon: Client, admin: Client):
    template = small_template(admin)["id"]
    vm1 = admin.run("POST", "/api/v1/vms", {"name": "one", "vm_template": template})
    vm2 = admin.run("POST", "/api/v1/vms", {"name": "two", "vm_template": template})
    one, two = vm1["result"]["vm"], vm2["result"]["vm"]
    token = admin.post("/api/v1/tokens", {"name": "one", "vms": [one]}).body
    assert token["vms"] == [one]
    scoped = Client(anon.base, token["token"])
    assert [v["id"] for v in scoped.get("/api/v1/vms").body["items"]] == [one]
    assert scoped.get(f"/api/v1/vms/{one}").status == 200
    assert_error(scoped.get(f"/api/v1/vms/{two}"), 403, "token_scope")
    assert_error(scoped.post(f"/api/v1/vms/{two}/actions/start"), 403, "token_scope")
    task = scoped.run("POST", f"/api/v1/vms/{one}/actions/start")  # polls /tasks/{id}
    assert task["subject"] == one
    assert {t["subject"] for t in scoped.get("/api/v1/tasks").body["items"]} == {one}
    assert_error(scoped.get(f"/api/v1/tasks/{vm2['id']}"), 404)
    for path in ("/api/v1/storages", "/api/v1/users", "/api/v1/tokens", "/api/v1/events"):
        assert_error(scoped.get(path), 403, "token_scope")
    assert_error(scoped.post("/api/v1/tokens", {"name": "wider"}), 403, "token_scope")
    assert_error(scoped.delete(f"/api/v1/vms/{two}"), 403)
    assert admin.get(f"/api/v1/vms/{two}").status == 200


def test_a_user_cannot_scope_a_token_to_someone_elses_vm(anon: Client, admin: Client):
    vm = admin.run("POST", "/api/v1/vms", {"name": "adminvm",
                                           "vm_template": small_template(admin)["id"]})
    add_user(admin)
    alice = anon.login("alice", "alice-password")
    assert_error(alice.post("/api/v1/tokens", {"vms": [vm["result"]["vm"]]}), 404)
    assert_error(alice.post("/api/v1/tokens", {"scope": "write"}), 422)


# -- password change, reset, logout everywhere -------------------------------------------
def test_a_password_change_revokes_the_users_other_sessions_and_tokens(anon: Client,
                                                                       admin: Client):
    add_user(admin)
    first = anon.login("alice", "alice-password")
    second = anon.login("alice", "alice-password")
    api = Client(anon.base, first.post("/api/v1/tokens", {"name": "t"}).body["token"])
    assert_error(first.post("/api/v1/auth/password", {"current_password": "wrong",
                                                      "new_password": "new-password-1"}),
                 403, "wrong_password")
    resp = first.post("/api/v1/auth/password", {"current_password": "alice-password",
                                                "new_password": "new-password-1"})
    assert resp.status == 200 and resp.body["revoked"] == 2
    assert first.get("/api/v1/auth/me").status == 200  # the one in use stays
    assert_error(second.get("/api/v1/auth/me"), 401)
    assert_error(api.get("/api/v1/auth/me"), 401)
    assert_error(login_as(anon, "alice", "alice-password"), 401)
    assert login_as(anon, "alice", "new-password-1").status == 200


def test_an_admin_reset_revokes_every_token_of_the_user(anon: Client, admin: Client):
    alice_id = add_user(admin)
    alice = anon.login("alice", "alice-password")
    api = Client(anon.base, alice.post("/api/v1/tokens", {}).body["token"])
    assert admin.patch(f"/api/v1/users/{alice_id}", {"password": "reset-password"}).status \
        == 200
    assert_error(alice.get("/api/v1/auth/me"), 401)
    assert_error(api.get("/api/v1/auth/me"), 401)
    assert admin.get("/api/v1/auth/me").status == 200
    # An admin resetting their own password keeps the token they use, and only that one.
    other = anon.login("admin", ADMIN_PASSWORD)
    admin_id = admin.get("/api/v1/auth/me").body["id"]
    assert admin.patch(f"/api/v1/users/{admin_id}", {"password": "new-admin-pw"}).status \
        == 200
    assert admin.get("/api/v1/auth/me").status == 200
    assert_error(other.get("/api/v1/auth/me"), 401)


def test_logout_everywhere(anon: Client, admin: Client):
    other = anon.login("admin", ADMIN_PASSWORD)
    api = Client(anon.base, admin.post("/api/v1/tokens", {}).body["token"])
    resp = other.post("/api/v1/auth/logout-everywhere", {"keep_api_tokens": True})
    assert resp.status == 200 and resp.body["revoked"] == 2
    assert_error(other.get("/api/v1/auth/me"), 401)
    assert_error(admin.get("/api/v1/auth/me"), 401)
    assert api.get("/api/v1/auth/me").status == 200
    assert api.post("/api/v1/auth/logout-everywhere").body["revoked"] == 1
    assert_error(api.get("/api/v1/auth/me"), 401)


# -- the browser sign-in: CSRF, rotation, throttling -------------------------------------
class Browser:
    """A cookie-keeping HTTP client that does not follow redirects."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str) -> None:
        self.base, self.jar = base, http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), self._NoRedirect)

    def request(self, path: str, form: dict | None = None, headers: dict | None = None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), dict(err.headers)

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def form_token(self) -> str:
        status, page, _ = self.request("/login")
        assert status == 200, page
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def sign_in(self, username: str = "admin", password: str = ADMIN_PASSWORD):
        token = self.form_token()
        return self.request("/login", {"username": username, "password": password,
                                       "csrf_token": token})


def test_a_cross_site_login_post_without_the_form_token_is_refused(server: str):
    attacker = Browser(server)  # a form on another site: no pre-session cookie, no token
    status, page, _ = attacker.request("/login", {"username": "admin",
                                                  "password": ADMIN_PASSWORD})
    assert status == 403 and "sign-in form has expired" in page
    assert attacker.cookie("hvp_session") is None
    victim = Browser(server)
    victim.form_token()  # the victim's own cookie, but the attacker's idea of a token
    status, _, _ = victim.request("/login", {"username": "admin", "password": ADMIN_PASSWORD,
                                             "csrf_token": "0" * 64})
    assert status == 403 and victim.cookie("hvp_session") is None
    status, _, headers = victim.sign_in()
    assert status in (302, 303) and victim.cookie("hvp_session")


def test_each_sign_in_makes_a_new_session_and_ends_the_old_one(server: str, admin: Client):
    browser = Browser(server)
    browser.sign_in()
    first = browser.cookie("hvp_session")
    assert browser.request("/vms")[0] == 200
    # The same browser signs in again (or a session id was planted in it: fixation).
    again = Browser(server)
    token = again.form_token()
    again.jar.set_cookie(_cookie("hvp_session", first, server))
    status, _, _ = again.request("/login", {"username": "admin", "password": ADMIN_PASSWORD,
                                            "csrf_token": token})
    second = again.cookie("hvp_session")
    assert status in (302, 303) and first and second and first != second
    assert browser.request("/vms")[0] in (302, 303)  # to /login: the old session is gone
    assert again.request("/vms")[0] == 200
    sessions = [t for t in admin.get("/api/v1/tokens").body["items"] if t["kind"] == "session"]
    assert len(sessions) == 1


def _cookie(name: str, value: str, base: str) -> http.cookiejar.Cookie:
    host = urllib.parse.urlsplit(base).hostname
    return http.cookiejar.Cookie(0, name, value, None, False, host, False, False, "/", True,
                                 False, None, False, None, None, {})


def test_the_sign_in_form_says_when_it_is_throttled(server: str, panel: Panel,
                                                    clocks: tuple[Clock, Clock]):
    browser = Browser(server)
    for _ in range(5):
        assert browser.sign_in(password="wrong")[0] == 401
    status, page, headers = browser.sign_in()
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert 'data-testid="login-error"' in page and "too many failed sign-in" in page
    assert browser.cookie("hvp_session") is None


# -- secrets at rest, file modes ---------------------------------------------------------
def test_no_token_secret_is_written_to_the_store(anon: Client, admin: Client, panel: Panel,
                                                 server: str):
    api = admin.post("/api/v1/tokens", {"name": "at-rest"}).body["token"]
    browser = Browser(server)
    browser.sign_in()
    secrets_ = [admin.token, api, browser.cookie("hvp_session")]
    files = [panel.data_dir / "panel.db", panel.data_dir / "panel.db.journal"]
    contents = b"".join(p.read_bytes() for p in files if p.exists())
    assert token_hash(api).encode() in contents  # what is kept instead
    panel.store.compact()  # the snapshot too
    contents += (panel.data_dir / "panel.db").read_bytes()
    for secret in secrets_:
        assert secret and secret.encode() not in contents
    assert _modes(panel.data_dir) == []  # an in-process panel too (this umask: 022)


def test_tokens_of_an_earlier_version_are_migrated_or_removed_at_start(tmp_path: Path):
    store = Store(tmp_path / "panel.db")
    old_api, old_login = "a" * 43, "b" * 43
    store.insert(TOKENS, {"id": token_hash(old_api)[:24], "kind": "api", "user": "u1",
                          "hash": token_hash(old_api), "created": 1.0, "expires": None})
    store.insert(TOKENS, {"id": token_hash(old_login)[:24], "kind": "login", "user": "u1",
                          "hash": token_hash(old_login), "created": 1.0,
                          "expires": time.time() + 3600})
    store.insert(TOKENS, {"id": "cleartoken", "kind": "api", "user": "u1",
                          "token": "secret-in-clear", "created": 1.0})
    Auth(store)
    left = store.all(TOKENS)
    assert [t["kind"] for t in left] == ["api"]
    assert left[0]["expires"] == pytest.approx(time.time() + 90 * 86400, abs=60)
    assert left[0]["scope"] == "full" and left[0]["v"] == 2
    store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("panel.db*"))
    assert b"secret-in-clear" not in on_disk  # the store was compacted after the migration
    assert Auth(Store(tmp_path / "panel.db")).tokens.migrate() == \
        {"deleted": 0, "upgraded": 0, "expired": 0}


def _modes(root: Path) -> list[tuple[str, str]]:
    """Paths under ``root`` (root included) whose mode is not 0600 (files) / 0700 (dirs)."""
    wrong = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            wrong.append((str(path.relative_to(root)), oct(mode)))
    return wrong


def test_the_store_files_are_private_whatever_the_umask(tmp_path: Path):
    old = os.umask(0o022)
    try:
        legacy = tmp_path / "old" / "panel.db"
        legacy.parent.mkdir(mode=0o700)
        legacy.write_bytes(b"{}")
        legacy.chmod(0o644)  # made by an earlier version
        for path in (tmp_path / "new" / "panel.db", legacy):
            store = Store(path, compact_every=3)
            for i in range(7):  # writes, compactions, a new snapshot
                store.insert("things", {"name": f"n{i}"})
            store.close()
            assert _modes(path.parent) == []
    finally:
        os.umask(old)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_up(base: str, proc: subprocess.Popen, context: ssl.SSLContext | None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the panel exited"
        try:
            urllib.request.urlopen(f"{base}/api/v1/health", timeout=2, context=context)
            return
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    raise AssertionError("the panel did not answer")


def _serve(tmp_path: Path, *extra: str, context: ssl.SSLContext | None = None):
    """``app.py serve`` in its own process (as in production: the CLI sets the umask)."""
    port, data = _free_port(), tmp_path / "data"
    env = {**os.environ, "HVP_ADMIN_PASSWORD": ADMIN_PASSWORD}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "serve", "--port", str(port),
             "--data-dir", str(data), "--node-uri", node_uri_for(tmp_path), *extra],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"{'https' if context else 'http'}://127.0.0.1:{port}"
    try:
        _wait_up(base, proc, context)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, base, data, log


def _stop(proc: subprocess.Popen, log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    assert proc.returncode == 0, log.read_text()


def test_every_file_the_served_panel_writes_is_private(tmp_path: Path):
    """After logins, tokens, a user, a password reset, a browser session and a VM, the data
    dir is 0700 with 0600 files throughout (the test process's own umask is 022)."""
    proc, base, data, log = _serve(tmp_path)
    try:
        admin = Client(base).login("admin", ADMIN_PASSWORD)
        assert admin.post("/api/v1/tokens", {"name": "t"}).status == 201
        alice_id = add_user(admin)
        Client(base).login("alice", "alice-password")
        assert admin.patch(f"/api/v1/users/{alice_id}",
                           {"password": "another-password"}).status == 200
        Browser(base).sign_in()
        template = small_template(admin)["id"]
        admin.run("POST", "/api/v1/vms", {"name": "vm1", "vm_template": template})
    finally:
        _stop(proc, log)
    assert (data / "panel.db.journal").exists()
    assert _modes(data) == []


def _https_supported() -> bool:
    from hypervisor_panel.web.server import make_server

    return hasattr(make_server(None, "127.0.0.1", 0), "use_tls")


@pytest.mark.skipif(not _https_supported(), reason="web/server.py's server has no "
                    "use_tls(context) yet (waitress cannot serve TLS itself)")
def test_served_over_https_with_hsts(tmp_path: Path):
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    proc, base, _data, log = _serve(tmp_path, "--tls-cert", str(cert), "--tls-key",
                                    str(key), context=context)
    try:
        with urllib.request.urlopen(f"{base}/login", timeout=10, context=context) as resp:
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
            assert "Secure" in resp.headers["Set-Cookie"]
    finally:
        _stop(proc, log)
    assert "https://" in log.read_text()


def test_tls_options_fail_clearly_when_they_cannot_be_used(tmp_path: Path):
    cert, key = self_signed(tmp_path)
    (tmp_path / "bad.pem").write_text("not a certificate")
    runs = {"bad": (str(tmp_path / "bad.pem"), str(tmp_path / "bad.pem")),
            "half": (str(cert), "")}
    if not _https_supported():
        runs["unsupported"] = (str(cert), str(key))
    expected = {"bad": "cannot use the TLS certificate", "half": "give both",
                "unsupported": "cannot serve TLS"}
    for name, (cert_path, key_path) in runs.items():
        done = subprocess.run(
            [sys.executable, str(ROOT / "app.py"), "serve", "--port", "0", "--data-dir",
             str(tmp_path / f"data-{name}"), "--tls-cert", cert_path, "--tls-key", key_path],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done
        assert expected[name] in done.stderr, done.stderr
        assert not (tmp_path / f"data-{name}").exists()  # nothing started


def _call(app, scheme: str) -> dict[str, str]:
    from wsgiref.util import setup_testing_defaults

    environ: dict = {"PATH_INFO": "/api/v1/health"}
    setup_testing_defaults(environ)
    environ["wsgi.url_scheme"] = scheme
    seen: dict[str, str] = {}
    b"".join(app(environ, lambda status, headers, *_: seen.update(headers)))
    return seen


def test_hsts_is_sent_over_https_only(panel: Panel):
    from hypervisor_panel.web.app import create_app

    app = create_app(panel)
    assert _call(app, "https")["Strict-Transport-Security"] == "max-age=31536000"
    assert "Strict-Transport-Security" not in _call(app, "http")


# -- password hashes ---------------------------------------------------------------------
def test_passwords_are_argon2id_hashes_with_their_parameters(panel: Panel):
    admin = next(u for u in panel.auth.users() if u["name"] == "admin")
    assert re.match(r"^\$argon2id\$v=19\$m=19456,t=2,p=1\$[^$]+\$[^$]+$",
                    admin["password_hash"])
    assert verify_password(ADMIN_PASSWORD, admin["password_hash"])
    assert not verify_password("wrong", admin["password_hash"])
    assert not verify_password("x", "garbage") and not verify_password("x", "scrypt$zz$zz")
    assert not needs_rehash(hash_password("x"))


def test_an_old_scrypt_hash_still_works_and_is_upgraded_at_login(anon: Client,
                                                                 panel: Panel):
    user = panel.auth.create_user("olduser", "old-password", "user")
    panel.store.update("users", user["id"], {"password_hash": legacy_scrypt_hash(
        "old-password")})
    assert_error(login_as(anon, "olduser", "wrong-password"), 401)
    assert panel.auth.get_user(user["id"])["password_hash"].startswith("scrypt$")
    assert login_as(anon, "olduser", "old-password").status == 200
    upgraded = panel.auth.get_user(user["id"])["password_hash"]
    assert upgraded.startswith("$argon2id$") and verify_password("old-password", upgraded)


def test_a_hash_with_older_parameters_is_rehashed_at_login(anon: Client, panel: Panel):
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("pw-12345678")
    user = panel.auth.create_user("weak", "pw-12345678", "user")
    panel.store.update("users", user["id"], {"password_hash": weak})
    assert needs_rehash(weak)
    assert login_as(anon, "weak", "pw-12345678").status == 200
    assert ",t=2,p=1$" in panel.auth.get_user(user["id"])["password_hash"]


@pytest.mark.browser
def test_the_browser_form_shows_the_lockout(server: str, page: Page, js_errors: list[str],
                                            clocks: tuple[Clock, Clock]):
    for _ in range(5):
        sign_in(page, server, password="not-the-password")
        expect(page.get_by_test_id("login-error")).to_contain_text("wrong username")
    sign_in(page, server)  # the right password, refused while locked
    expect(page.get_by_test_id("login-error")).to_contain_text("too many failed sign-in")
    expect(page).to_have_url(re.compile(r"/login$"))
    clocks[0].advance(301)
    sign_in(page, server)
    expect(page).to_have_url(re.compile(r"/$"))
