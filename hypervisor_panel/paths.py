"""Which host folders the panel may hand to libvirt or write into: one rule for every plugin.

A storage folder (``dir`` path, NFS mount point) or a backup folder becomes a libvirt pool
or a place the panel writes: every file in it can be listed, downloaded, overwritten or
deleted through the API. So a path is refused when it is not absolute, has a ``.`` or
``..`` component, or when it — or what it resolves to, symlinks followed — is:

* inside a system tree (:data:`SYSTEM_TREES`, every ``/lib*``): the OS, its package
  database, its logs, root's home, kernel and device file systems;
* one of the folders that hold everything else (:data:`SYSTEM_FOLDERS`: ``/``, ``/home``,
  ``/var``, ``/tmp``, ...), themselves only: ``/home/vmstore`` or ``/srv/vm`` are where
  admins keep images (``/home`` is often the big partition), but a pool at ``/home`` would
  list every user's home folder as a volume;
* inside ``/var/lib/libvirt``, except ``/var/lib/libvirt/images`` and below (libvirt's own
  pool folder, the usual place for VM disks; the rest is libvirt's state: qemu, dnsmasq,
  swtpm, boot);
* a panel's data directory (:func:`protect_data_dir`) or one of its private folders
  (secrets, SSH keys, guest keys, template work): the store and its secrets must never be
  a volume. Another folder inside a data directory is allowed (demo set-ups keep images
  next to the database).

Paths are resolved on the panel's machine: for a remote node that is a best effort (the
node may have other symlinks); the textual checks hold everywhere.

Direct kernel boot files (:func:`boot_path_problem`) are confined the other way round: only
inside :data:`BOOT_DIRS`, the folders of the panel's file storages and the folders listed
in ``HVP_BOOT_DIRS`` (``:``-separated), where admins of Proxmox or virt-install keep kernels.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from .errors import Invalid

SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/proc", "/root", "/run", "/sbin", "/sys",
                "/usr", "/var/lib/apt", "/var/lib/dpkg", "/var/lock", "/var/log", "/var/run")
SYSTEM_FOLDERS = ("/", "/home", "/media", "/mnt", "/opt", "/srv", "/var", "/var/lib",
                  "/var/backups", "/var/cache", "/var/spool", "/var/mail",
                  "/tmp", "/var/tmp")  # noqa: S108 - refused, not used
LIBVIRT_STATE, LIBVIRT_IMAGES = "/var/lib/libvirt", "/var/lib/libvirt/images"
#: Folders of a data directory that hold the panel's own state (refused with their content).
PANEL_PRIVATE = ("secrets", "ssh", "guest-keys", "os-templates")
BOOT_DIRS = ("/boot", "/var/lib/libvirt/boot", LIBVIRT_IMAGES)
BOOT_DIRS_ENV = "HVP_BOOT_DIRS"

_data_dirs: set[str] = set()


def protect_data_dir(path: str | os.PathLike[str]) -> None:
    """Refuse ``path`` (a panel's data directory) and its private folders from now on."""
    for form in (os.path.abspath(path), os.path.realpath(path)):
        _data_dirs.add(form)


def within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it (both normalized and absolute)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


#: JSON Schema pattern of a plain absolute path (what :func:`syntax_problem` accepts), for
#: option schemas of folders the panel only reads (recipe and OS template folders).
PLAIN_PATH_PATTERN = r"^/(?!(.*/)?\.{1,2}(/|$))[^\x00]*$"


def syntax_problem(path: object) -> str | None:
    """Why ``path`` is not a plain absolute path (None when it is one)."""
    if not isinstance(path, str) or not path:
        return "a path is needed"
    if not path.startswith("/"):
        return "it must be an absolute path"
    if "\0" in path or any(part in (".", "..") for part in path.split("/")):
        return "it must not contain '.' or '..' components"
    return None


def system_problem(path: str, extra_trees: Iterable[str] = ()) -> str | None:
    """Why the normalized absolute ``path`` is a system or panel folder (None: it is not)."""
    top = "/" + path.split("/")[1]
    lib = (top,) if top.startswith("/lib") else ()  # /lib, /lib32, /lib64, /libx32, ...
    for tree in (*SYSTEM_TREES, *lib, *extra_trees):
        if within(path, tree):
            return f"it is inside the system folder {tree}"
    if path in SYSTEM_FOLDERS:
        return "it is a system folder"
    if within(path, LIBVIRT_STATE) and not within(path, LIBVIRT_IMAGES):
        return f"it is one of libvirt's own folders (only {LIBVIRT_IMAGES} may be used)"
    for data in _data_dirs:
        if path == data or any(within(path, f"{data}/{p}") for p in PANEL_PRIVATE):
            return "it holds the panel's own data"
    return None


def normalize(path: str) -> str:
    """``path`` without doubled slashes, ``.``/``..`` resolved textually (POSIX keeps
    a leading ``//``; this does not)."""
    return "/" + os.path.normpath(path).lstrip("/")


def path_problem(path: object, extra_trees: Iterable[str] = ()) -> tuple[str, str] | None:
    """``(shown path, why)`` when ``path`` may not be a storage or backup folder."""
    why = syntax_problem(path)
    if why or not isinstance(path, str):
        return str(path), why or "a path is needed"
    normal = normalize(path)
    resolved = os.path.realpath(normal)
    extra = tuple(extra_trees)
    for candidate in dict.fromkeys((normal, resolved)):
        why = system_problem(candidate, extra)
        if why:
            return (path if candidate == normal else f"{path} (resolved: {resolved})"), why
    return None


def check_host_path(path: object, what: str, code: str = "path_refused",
                    extra_trees: Iterable[str] = ()) -> str:
    """``path`` normalized, or :class:`Invalid` (422, ``code``) saying why it is refused."""
    problem = path_problem(path, extra_trees)
    if problem:
        shown, why = problem
        raise Invalid(f"refusing {shown} as {what}: {why}", code=code)
    return normalize(path)  # type: ignore[arg-type]


def boot_dirs(extra: Iterable[str] = ()) -> list[str]:
    """Where direct-boot kernels and initrds may be: defaults, ``HVP_BOOT_DIRS``, ``extra``."""
    listed = os.environ.get(BOOT_DIRS_ENV, "").split(":")
    folders = [*BOOT_DIRS, *(p for p in listed if p.startswith("/")), *extra]
    return list(dict.fromkeys(normalize(f) for f in folders))


def boot_path_problem(path: str, extra: Iterable[str] = (), resolve: bool = True
                      ) -> str | None:
    """Why ``path`` may not be a boot kernel or initrd (None: allowed).

    Plain absolute paths only (no ``.``, ``..`` or ``//``), inside :func:`boot_dirs`; with
    ``resolve`` (the file is on this machine) its symlinks are followed and the target must
    be inside one of those folders (resolved too) as well.
    """
    why = syntax_problem(path)
    if why or "//" in path:
        return why or "it must not contain '//'"
    folders = boot_dirs(extra)
    checks = [(path, folders)]
    if resolve:
        checks.append((os.path.realpath(path), [os.path.realpath(f) for f in folders]))
    for candidate, allowed in checks:
        shown = path if candidate == path else f"{path} (resolved: {candidate})"
        if not any(within(candidate, folder) for folder in allowed):
            return f"{shown} is not in a folder allowed for boot files ({', '.join(folders)})"
        if any(within(candidate, data) for data in _data_dirs):
            return f"{shown} is in the panel's data directory"
    return None
