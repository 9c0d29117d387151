"""Read the recipes (``*.sh``) of a .tar(.gz) or .zip archive, in memory, refusing tricks.

Nothing is written to disk, and an archive is refused as a whole (``UnsafeSource``) when
a member's path is absolute or climbs out with ``..``, when a link points outside the
archive, or when it is too big (members, unpacked bytes): a repository serving such an
archive is not trusted with the rest either.
"""

from __future__ import annotations

import io
import posixpath
import stat
import tarfile
import zipfile
from collections.abc import Iterator

from hypervisor_panel.recipes import MAX_RECIPE_BYTES, RecipeText, UnsafeSource, check_member_path

MAX_MEMBERS = 10_000
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
SUFFIX = ".sh"


def kind_of(data: bytes, name: str = "") -> str | None:
    """"tar" or "zip" (by magic bytes, then by name), None for anything else."""
    if data[:4] == b"PK\x03\x04" or name.endswith(".zip"):
        return "zip"
    if data[:2] == b"\x1f\x8b" or data[257:262] == b"ustar" or \
            name.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar"
    return None


def _link_inside(member: str, target: str, hard: bool) -> None:
    """Refuse a link whose target leaves the archive (hard links name a member path)."""
    base = "" if hard else posixpath.dirname(member)
    resolved = posixpath.normpath(posixpath.join(base, target))
    if not target or target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise UnsafeSource(f"archive member {member!r} links outside the archive "
                           f"({target!r})", code="unsafe_link")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _budget(total: int, size: int, count: int) -> int:
    if count > MAX_MEMBERS:
        raise UnsafeSource(f"the archive has more than {MAX_MEMBERS} members",
                           code="archive_too_big")
    if total + size > MAX_UNPACKED_BYTES:
        raise UnsafeSource(f"the archive unpacks to more than {MAX_UNPACKED_BYTES >> 20} MiB",
                           code="archive_too_big")
    return total + size


def read_tar(data: bytes) -> Iterator[RecipeText]:
    """The ``*.sh`` regular files of a tar archive (any compression tarfile reads)."""
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UnsafeSource(f"not a readable tar archive: {exc}", code="bad_archive") from exc
    found: list[RecipeText] = []
    total = 0
    with archive:
        try:
            for count, member in enumerate(archive, 1):
                check_member_path(member.name.removeprefix("./") or ".")
                if member.issym() or member.islnk():
                    _link_inside(member.name, member.linkname, member.islnk())
                    continue
                total = _budget(total, member.size, count)
                if member.isfile() and member.name.endswith(SUFFIX):
                    fh = archive.extractfile(member)
                    raw = fh.read(MAX_RECIPE_BYTES + 1) if fh else b""
                    found.append(RecipeText(_text(raw), member.name.removeprefix("./")))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UnsafeSource(f"the tar archive is damaged: {exc}",
                               code="bad_archive") from exc
    return iter(found)


def read_zip(data: bytes) -> Iterator[RecipeText]:
    """The ``*.sh`` regular files of a zip archive."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeSource(f"not a readable zip archive: {exc}", code="bad_archive") from exc
    found: list[RecipeText] = []
    total = 0
    with archive:
        for count, info in enumerate(archive.infolist(), 1):
            check_member_path(info.filename.rstrip("/") or ".")
            total = _budget(total, info.file_size, count)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                _link_inside(info.filename, _text(archive.read(info)[:4096]), False)
                continue
            if not info.is_dir() and info.filename.endswith(SUFFIX):
                try:
                    with archive.open(info) as fh:
                        raw = fh.read(MAX_RECIPE_BYTES + 1)
                except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
                    raise UnsafeSource(f"zip member {info.filename!r} is unreadable: {exc}",
                                       code="bad_archive") from exc
                found.append(RecipeText(_text(raw), info.filename))
    return iter(found)


def read_archive(data: bytes, name: str = "") -> Iterator[RecipeText]:
    """The recipes of an archive (tar or zip, told by its bytes or ``name``)."""
    kind = kind_of(data, name)
    if kind is None:
        raise UnsafeSource(f"{name or 'the download'} is not a tar or zip archive",
                           code="bad_archive")
    return read_tar(data) if kind == "tar" else read_zip(data)
