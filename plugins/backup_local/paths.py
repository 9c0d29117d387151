"""Which folders a ``local`` target may use: absolute, no ``..``, never a system folder."""

from __future__ import annotations

import os
from pathlib import Path

from hypervisor_panel.backup import TargetError

#: The JSON Schema pattern of the ``path`` option (the checks below are the real ones).
PATH_PATTERN = r"^/(?!.*(^|/)\.\.(/|$))[A-Za-z0-9._/+-]*$"
#: Refused together with everything under them (the OS, libvirt's own files).
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
                "/proc", "/run", "/sbin", "/sys", "/usr", "/var/lib/libvirt", "/var/run")
#: Refused themselves (a sub-folder of them is fine): the roots of the file system.
SYSTEM_FOLDERS = ("/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/var", "/var/lib",
                  "/var/backups", "/var/cache", "/var/log",
                  "/tmp", "/var/tmp")  # noqa: S108 - refused, not used


def _refused(path: str) -> str | None:
    for tree in SYSTEM_TREES:
        if path == tree or path.startswith(tree + "/"):
            return f"it is inside the system folder {tree}"
    if path in SYSTEM_FOLDERS:
        return "it is a system folder"
    return None


def check_folder(path: object) -> Path:
    """The backup folder ``path`` resolved (symlinks followed), or :class:`TargetError`."""
    if not isinstance(path, str) or not path:
        raise TargetError("the local backup folder needs a path")
    if not path.startswith("/"):
        raise TargetError(f"the local backup folder {path!r} must be an absolute path")
    if ".." in path.split("/") or "\0" in path:
        raise TargetError(f"the local backup folder {path!r} must not contain '..'")
    normal = os.path.normpath(path)
    resolved = os.path.realpath(normal)
    for candidate in dict.fromkeys((normal, resolved)):
        why = _refused(candidate)
        if why:
            shown = path if candidate == normal else f"{path} (resolved: {resolved})"
            raise TargetError(f"refusing {shown} as a local backup folder: {why}")
    return Path(resolved)
