"""What a scoped API token may do; applied by the web glue around every route.

* ``scope: "read"``: GET (and HEAD) only; ``POST /auth/logout`` (revoking itself) too.
* ``vms: [ids]``: only the routes of those VMs (``/vms/{vm_id}...`` with an id in the
  list), the VM list and the task list (both filtered to those VMs), the tasks of those
  VMs, ``/auth/me`` and ``/auth/logout``. Everything else is a 403 ``token_scope``: such
  a token cannot make another token, see other objects or change the account.

Tokens without these fields (sessions, login tokens, full API tokens) are not limited
here; the route's role check applies to every token as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import Forbidden, NotFound

READ_METHODS = ("GET", "HEAD")
ALWAYS = {("POST", "/auth/logout"), ("GET", "/auth/me"), ("GET", "/health")}
VM_LISTS = {("GET", "/vms"): "id", ("GET", "/tasks"): "subject"}
VM_TASK = ("GET", "/tasks/{task_id}")


def limited(token: Mapping[str, Any] | None) -> bool:
    return bool(token) and (token.get("scope") == "read" or token.get("vms") is not None)


def check_scope(token: Mapping[str, Any] | None, method: str, path: str,
                args: Mapping[str, Any]) -> None:
    """Raise 403 ``token_scope`` when ``token`` may not call ``method path``."""
    if not limited(token):
        return
    assert token is not None
    if (method, path) in ALWAYS:
        return
    if token.get("scope") == "read" and method not in READ_METHODS:
        raise Forbidden("this token is read-only", code="token_scope")
    vms = token.get("vms")
    if vms is None:
        return
    if (method, path) in VM_LISTS or (method, path) == VM_TASK:
        return  # answered, then filtered by filter_result
    if "vm_id" in args and args["vm_id"] in vms and path.startswith("/vms/{vm_id}"):
        return
    raise Forbidden("this token is limited to some VMs and may not call this route",
                    code="token_scope")


def filter_result(token: Mapping[str, Any] | None, method: str, path: str,
                  result: Any) -> Any:
    """Narrow a listing (or refuse a task) to the VMs a VM-scoped token names."""
    if not token or token.get("vms") is None:
        return result
    vms = set(token["vms"])
    field = VM_LISTS.get((method, path))
    if field and isinstance(result, dict) and isinstance(result.get("items"), list):
        return {**result, "items": [i for i in result["items"]
                                    if isinstance(i, dict) and i.get(field) in vms]}
    if (method, path) == VM_TASK and (not isinstance(result, dict)
                                      or result.get("subject") not in vms):
        raise NotFound("task not found", code="task_not_found")
    return result
