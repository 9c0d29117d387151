"""Who may call what: every route of the table x {anonymous, owner, other user, admin}.

Generated from ``panel.routes`` (plugin routes included), with real seeded objects in the
path (``tests/support/seeded.py``): a VM, its task, its interface and a recipe owned by
user alice, the rest made by the admin. The rules:

* ``public`` routes answer without authentication (never 401/403);
* every other route answers 401 to an anonymous caller;
* ``admin`` routes answer 403 to users;
* ``user`` routes follow :data:`RULES`, one per route (a new route without a rule fails):
  ``SHARED`` ones are open to every user; owner-scoped ones answer the other user bob with
  the status given there (the panel hides what is not yours: 404 throughout, the same
  answer as for an id that does not exist) and answer alice, the owner, as they would the
  admin; ``ADMINS`` ones, on an object of the admin's, answer 404 to both users;
* the admin is never refused (no 401/403).

Every refused call runs first, then the allowed ones: the refused ones must have changed
nothing (:func:`state`). Bodies are ``{}`` except where an owner-scoped route needs a valid
one (:data:`BODIES`), so that its refusal comes from the owner check, not from validation;
elsewhere an allowed call mostly stops at validation (422) and changes little.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypervisor_panel.panel import Panel
from hypervisor_panel.routes import PREFIX, Route
from tests.conftest import ADMIN_PASSWORD
from tests.support.client import Client, Response
from tests.support.seeded import USER_PASSWORD, fill, seed, user_client

SHARED = "shared"  # open to every user; no owner to protect
ADMINS = "admins"  # the seeded object is the admin's (a panel backup, an OS template): 404
#: Every ``user`` route: SHARED, ADMINS, or the status bob gets on alice's object.
RULES: dict[tuple[str, str], str | int] = {
    ("GET", "/openapi.json"): SHARED,
    ("GET", "/plugins"): SHARED,
    ("GET", "/plugins/{plugin_id}"): SHARED,
    ("GET", "/settings"): SHARED,
    ("GET", "/tasks"): SHARED,  # filtered to the user's tasks
    ("GET", "/tasks/{task_id}"): 404,
    ("POST", "/tasks/{task_id}/actions/cancel"): 404,
    ("GET", "/events"): SHARED,  # the user's own events
    ("POST", "/auth/logout-everywhere"): SHARED,
    ("POST", "/auth/password"): SHARED,
    ("POST", "/auth/logout"): SHARED,
    ("GET", "/auth/me"): SHARED,
    ("GET", "/tokens"): SHARED,  # the user's own tokens
    ("POST", "/tokens"): SHARED,
    ("DELETE", "/tokens/{token_id}"): 404,  # the admin's token
    ("GET", "/nodes"): SHARED,
    ("GET", "/nodes/{node_id}"): SHARED,
    ("GET", "/vm-templates"): SHARED,
    ("GET", "/vm-templates/{template_id}"): SHARED,
    ("GET", "/storage-backends"): SHARED,
    ("GET", "/storages"): SHARED,
    ("GET", "/storages/{storage_id}"): SHARED,
    ("GET", "/network-modes"): SHARED,
    ("GET", "/networks"): SHARED,
    ("GET", "/os-templates"): SHARED,
    ("GET", "/os-templates/{os_template_id}"): ADMINS,  # users see ready ones, their own
    ("POST", "/os-templates/uploads"): SHARED,
    ("PUT", "/os-templates/{os_template_id}/content"): ADMINS,
    ("DELETE", "/os-templates/{os_template_id}"): ADMINS,
    ("GET", "/recipes"): SHARED,
    ("POST", "/recipes"): SHARED,
    ("GET", "/recipes/{recipe_id}"): 404,
    ("PATCH", "/recipes/{recipe_id}"): 404,
    ("DELETE", "/recipes/{recipe_id}"): 404,
    ("GET", "/recipe-settings"): SHARED,
    ("GET", "/vms"): SHARED,  # filtered to the user's VMs
    ("POST", "/vms"): SHARED,
    ("GET", "/vms/{vm_id}"): 404,
    ("PATCH", "/vms/{vm_id}"): 404,
    ("DELETE", "/vms/{vm_id}"): 404,
    ("POST", "/vms/{vm_id}/actions/start"): 404,
    ("POST", "/vms/{vm_id}/actions/stop"): 404,
    ("POST", "/vms/{vm_id}/actions/reboot"): 404,
    ("POST", "/vms/{vm_id}/actions/destroy"): 404,
    ("POST", "/vms/{vm_id}/actions/run-recipe"): 404,
    ("POST", "/vms/{vm_id}/actions/reinstall"): 404,
    ("POST", "/vms/{vm_id}/actions/migrate"): 404,
    ("GET", "/vms/{vm_id}/migration-check"): 404,
    ("GET", "/vms/{vm_id}/console"): 404,
    ("GET", "/vms/{vm_id}/recipe-runs"): 404,
    ("GET", "/vms/{vm_id}/interfaces"): 404,
    ("POST", "/vms/{vm_id}/interfaces"): 404,
    ("DELETE", "/vms/{vm_id}/interfaces/{nic_id}"): 404,
    ("GET", "/vms/{vm_id}/network-config"): 404,
    ("GET", "/vms/{vm_id}/snapshots"): 404,
    ("POST", "/vms/{vm_id}/snapshots"): 404,
    ("POST", "/vms/{vm_id}/snapshots/{name}/actions/revert"): 404,
    ("DELETE", "/vms/{vm_id}/snapshots/{name}"): 404,
    ("GET", "/backups"): SHARED,  # the backups of the user's VMs
    ("GET", "/backups/{backup_id}"): ADMINS,
}
#: Valid bodies (and queries) of owner-scoped routes; "{name}" is a seeded id.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/vms/{vm_id}"): {"description": "changed"},
    ("POST", "/vms/{vm_id}/actions/run-recipe"): {"recipe": "{recipe_id}"},
    ("POST", "/vms/{vm_id}/actions/reinstall"): {"os_template": "{os_template_id}"},
    ("POST", "/vms/{vm_id}/actions/migrate"): {"node": "{node_id}"},
    ("POST", "/vms/{vm_id}/interfaces"): {"network": "{network_id}"},
    ("POST", "/vms/{vm_id}/snapshots"): {"name": "snap1"},
    ("PATCH", "/recipes/{recipe_id}"): {"access": "nobody"},
}
QUERIES = {("GET", "/vms/{vm_id}/migration-check"): "?node={node_id}"}
#: Calls not made by an allowed actor, and why (refused actors are still checked).
NOT_CALLED_WHEN_ALLOWED = {
    ("POST", "/nodes/local-libvirt"): "adds this machine's real libvirtd as a node",
    ("POST", "/backup-targets/{target_id}/actions/restore-panel"):
        "an empty body is refused anyway; a valid one would replace the panel",
}
#: Snapshot of what refused calls must not change (admin GETs; volatile fields dropped).
STATE_PATHS = ("/vms", "/vms/{vm_id}", "/vms/{vm_id}/interfaces", "/users", "/storages",
               "/storages/{storage_id}/volumes", "/networks", "/ip-pools",
               "/ip-pools/{pool_id}/allocations", "/vm-templates", "/recipes",
               "/recipes/{recipe_id}", "/backups", "/backup-targets", "/backup-schedules",
               "/os-templates", "/os-template-repos", "/recipe-sources", "/settings",
               "/recipe-settings", "/tasks?limit=1000", "/nodes")
VOLATILE = ("stats", "last_used", "resources", "usage", "next_run")


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def state(admin: Client, ids: dict[str, str], users: list[str]) -> dict[str, Any]:
    """What the panel holds, as the admin sees it, and every user's token ids."""
    out = {path: _stable(admin.get(PREFIX + fill(path, ids)).body) for path in STATE_PATHS}
    for user_id in users:
        out[f"tokens of {user_id}"] = sorted(
            t["id"] for t in admin.get(f"{PREFIX}/tokens?user={user_id}").body["items"])
    return out


def call(client: Client, route: Route, ids: dict[str, str]) -> Response:
    """``route`` with the seeded ids and its :data:`BODIES` body (``{}`` by default; one
    byte for an upload)."""
    key = (route.method, route.path)
    path = PREFIX + fill(route.path + QUERIES.get(key, ""), ids)
    if route.raw_body:
        return client.request(route.method, path, raw=b"x",
                              headers={"Content-Type": "application/octet-stream"})
    body = None
    if route.method in ("POST", "PUT", "PATCH"):
        body = {k: fill(v, ids) for k, v in BODIES.get(key, {}).items()}
    return client.request(route.method, path, body)


def _order(route: Route) -> tuple[int, int]:
    """Deletes last (the deepest paths first), so they do not take away what others use."""
    return (1, -route.path.count("/")) if route.method == "DELETE" else (0, 0)


def test_every_route_answers_each_actor_as_its_rule_says(panel: Panel, anon: Client,
                                                         admin: Client, tmp_path: Path):
    alice, alice_user = user_client(admin, "alice")
    bob, bob_user = user_client(admin, "bob")
    ids = seed(admin, tmp_path, owner=alice)
    routes = sorted(panel.routes, key=_order)
    user_routes = {(r.method, r.path) for r in routes if r.role == "user"}
    assert user_routes - set(RULES) == set(), \
        f"user routes without a rule in RULES (add one): {sorted(user_routes - set(RULES))}"
    assert set(RULES) - user_routes == set(), \
        f"rules for routes that are not user routes: {sorted(set(RULES) - user_routes)}"
    logins = {"anon": anon, "alice": alice, "bob": bob, "admin": admin}
    passwords = {"alice": USER_PASSWORD, "bob": USER_PASSWORD, "admin": ADMIN_PASSWORD}

    refused: list[tuple[str, Route, int]] = []  # actor, route, expected status
    allowed: list[tuple[str, Route]] = []
    for route in routes:
        rule = RULES.get((route.method, route.path), SHARED)
        if route.role == "public":
            allowed += [("anon", route), ("alice", route), ("admin", route)]
            continue
        refused.append(("anon", route, 401))
        allowed.append(("admin", route))
        if route.role == "admin":
            refused += [("alice", route, 403), ("bob", route, 403)]
        elif rule == SHARED:
            allowed += [("alice", route), ("bob", route)]
        elif rule == ADMINS:
            refused += [("alice", route, 404), ("bob", route, 404)]
        else:
            refused.append(("bob", route, int(rule)))
            allowed.append(("alice", route))

    before = state(admin, ids, [alice_user["id"], bob_user["id"]])
    wrong = []
    for actor, route, expected in refused:
        resp = call(logins[actor], route, ids)
        if resp.status != expected or not isinstance(resp.body, dict) or "error" not in resp.body:
            wrong.append(f"{actor} {route.method} {route.path}: {resp.status} "
                         f"(expected {expected}) {resp.body!r:.200}")
    assert not wrong, "refusals that are not as the rules say:\n" + "\n".join(wrong)
    assert state(admin, ids, [alice_user["id"], bob_user["id"]]) == before, \
        "a refused call changed something"

    for actor, route in allowed:
        if (route.method, route.path) in NOT_CALLED_WHEN_ALLOWED:
            continue
        resp = call(logins[actor], route, ids)
        owner_scoped = RULES.get((route.method, route.path), SHARED) not in (SHARED, ADMINS)
        refusals = (401, 403, 404) if owner_scoped and route.method != "DELETE" else (401, 403)
        if resp.status in refusals or resp.status >= 500:
            wrong.append(f"{actor} {route.method} {route.path}: {resp.status} "
                         f"{resp.body!r:.200}")
        if route.path.startswith("/auth/") and actor in passwords:  # it may have ended
            logins[actor] = anon.login(actor, passwords[actor])  # the session: log in again
    assert not wrong, "allowed calls that were refused (or failed):\n" + "\n".join(wrong)
