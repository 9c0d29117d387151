"""Who may see and change which OS template.

Admins see and change every template. Users see the ready templates an admin made
(``owner`` None) and the ones they uploaded themselves. A user with the ``upload_isos``
permission may upload installer ISOs (never disk images: a disk image becomes every
VM's first boot, so only admins publish those); such an ISO belongs to them, and only
they and admins see, use and delete it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import Forbidden, NotFound
from .limits import allowed, is_admin

Record = Mapping[str, Any]


def owner_for(user: Record) -> str | None:
    """The ``owner`` of a template ``user`` uploads (None: an admin's, for everyone)."""
    return None if is_admin(user) else user["id"]


def check_upload(user: Record, body: Record) -> None:
    """Refuse an upload the user may not start."""
    if is_admin(user):
        return
    if not allowed(user, "upload_isos"):
        raise Forbidden("you may not upload OS templates: ask an admin for the upload_isos "
                        "permission", code="permission_required")
    if body.get("kind", "iso" if body.get("format") == "iso" else "image") != "iso":
        raise Forbidden("users upload installer ISOs only (kind iso, format iso); disk "
                        "images are published by admins", code="admins_only_images")


def visible(record: Record, user: Record | None) -> bool:
    """Whether ``user`` sees ``record`` at all (users: ready ones, their own in any state)."""
    if user is None or is_admin(user):
        return True
    owner = record.get("owner")
    if owner is not None:
        return owner == user["id"]
    return record.get("state") == "ready"


def require_own(record: Record, user: Record | None) -> None:
    """A user's change to a template that is not theirs looks like a missing one."""
    if user is not None and not is_admin(user) and record.get("owner") != user["id"]:
        raise NotFound(f"OS template {record['id']!r} not found",
                       code="os_template_not_found")
