"""Who uses what: the owner of an object asks here before deleting it.

A service that refers to other services' objects (VMs use storages, templates, nodes and
users) registers a finder per kind; the owner of that kind calls :meth:`refuse_if_used`
and never reads the other service's table.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import Conflict

Finder = Callable[[str], list[str]]  # object id -> names of what uses it


class References:
    def __init__(self) -> None:
        self._finders: dict[str, list[tuple[Finder, str]]] = {}

    def register(self, kind: str, finder: Finder, label: str) -> None:
        """``finder`` names the users of an object of ``kind``; ``label`` says what they
        are ("VM"), for messages."""
        self._finders.setdefault(kind, []).append((finder, label))

    def users(self, kind: str, obj_id: str) -> list[str]:
        """The names of what uses the object (VM names, ...)."""
        return [name for finder, _ in self._finders.get(kind, []) for name in finder(obj_id)]

    def described(self, kind: str, obj_id: str) -> list[str]:
        """The users with what they are ("VM web1")."""
        return [f"{label} {name}" for finder, label in self._finders.get(kind, [])
                for name in finder(obj_id)]

    def refuse_if_used(self, kind: str, obj_id: str, what: str, code: str) -> None:
        """409 ``code`` naming (up to five of) the users of ``what`` when there are any."""
        users = self.described(kind, obj_id)
        if users:
            shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5
                                            else "")
            raise Conflict(f"{what} is used by {shown}", code=code, details=users)
