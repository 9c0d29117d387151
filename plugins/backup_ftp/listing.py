"""Listing an ``ftp`` target: MLSD (type, size, modify), else NLST plus SIZE per file."""

from __future__ import annotations

import datetime
import ftplib
import posixpath

from hypervisor_panel.backup import PARTIAL_PREFIX, TargetEntry, TargetError, check_archive_name

from .session import FtpSession, reply_code

#: Replies of a server that does not know a command.
UNKNOWN_COMMAND = ("500", "501", "502", "504")
#: (name, is_folder, size, mtime) of one remote folder entry.
Row = tuple[str, bool, int, float | None]


def valid(name: str) -> bool:
    try:
        check_archive_name(name)
    except TargetError:
        return False
    return True


def ftp_time(value: str | None) -> float | None:
    """``YYYYMMDDHHMMSS[.sss]`` (UTC, as MLSD ``modify`` and MDTM give it) in epoch seconds."""
    try:
        stamp = datetime.datetime.strptime((value or "")[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return stamp.replace(tzinfo=datetime.UTC).timestamp()


def _mlsd(ftp: ftplib.FTP, path: str) -> list[Row]:
    rows = []
    for name, facts in list(ftp.mlsd(path, facts=["type", "size", "modify"])):
        kind = facts.get("type", "").lower()
        if kind in ("file", "dir"):
            rows.append((posixpath.basename(name), kind == "dir", int(facts.get("size") or 0),
                         ftp_time(facts.get("modify"))))
    return rows


def _nlst(session: FtpSession, path: str) -> list[Row]:
    rows = []
    for name in session.client.nlst(path):
        base = posixpath.basename(name.rstrip("/"))
        if base in ("", ".", ".."):
            continue
        size = session.size(posixpath.join(path, base))
        rows.append((base, size is None, size or 0, None))
    return rows


def rows(session: FtpSession, path: str) -> list[Row]:
    """The entries of folder ``path`` (relative to the target's folder); [] when missing."""
    shown = session.folder if path == "." else posixpath.join(session.folder, path)
    with session.guard(f"listing {shown}"):
        try:
            return _mlsd(session.client, path)
        except ftplib.error_perm as exc:
            if reply_code(exc) not in UNKNOWN_COMMAND:
                if reply_code(exc) == "550":
                    return []
                raise
        try:
            return _nlst(session, path)
        except ftplib.error_perm as exc:
            if reply_code(exc) == "550":
                return []
            raise


def _pick(path_rows: list[Row], prefix: str, partial: bool) -> list[TargetEntry]:
    out = []
    for name, is_folder, size, mtime in path_rows:
        if is_folder or partial != name.startswith(PARTIAL_PREFIX):
            continue
        full = prefix + (name[len(PARTIAL_PREFIX):] if partial else name)
        if valid(full):
            out.append(TargetEntry(full, size, mtime))
    return out


def entries(session: FtpSession, folder: str, partial: bool) -> list[TargetEntry]:
    """Archives (or temporary files) in ``folder``, or at the top and one level down."""
    if folder:
        if "/" in folder:
            raise TargetError(f"invalid archive folder {folder!r}")
        check_archive_name(folder)
        return sorted(_pick(rows(session, folder), folder + "/", partial), key=lambda e: e.name)
    top = rows(session, ".")
    found = _pick(top, "", partial)
    for name, is_folder, _size, _mtime in top:
        if is_folder and valid(name):
            found += _pick(rows(session, name), name + "/", partial)
    return sorted(found, key=lambda e: e.name)
