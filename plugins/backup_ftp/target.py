"""The ``ftp`` target: FTP or explicit FTPS (TLS), passive by default, resumable uploads."""

from __future__ import annotations

import ftplib
import io
import secrets
from collections.abc import Iterator
from typing import Any, ClassVar

from hypervisor_panel.backup import (
    BackupTarget,
    TargetEntry,
    TargetError,
    check_archive_name,
    partial_name,
)

from .listing import entries, ftp_time
from .reader import FtpReader
from .session import FtpSession
from .writer import FtpWriter

NO_CONTROL = r"^[^\u0000-\u001f\u007f]*$"
OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["host"],
    "properties": {
        "host": {"type": "string", "title": "Host", "minLength": 1, "maxLength": 253,
                 "pattern": r"^[A-Za-z0-9._:\[\]-]+$"},
        "port": {"type": "integer", "title": "Port", "minimum": 1, "maximum": 65535,
                 "default": 21},
        "username": {"type": "string", "title": "User", "maxLength": 128,
                     "pattern": NO_CONTROL, "default": "anonymous"},
        "password": {"type": "string", "title": "Password", "maxLength": 256,
                     "pattern": NO_CONTROL, "writeOnly": True, "default": ""},
        "path": {"type": "string", "title": "Remote folder", "maxLength": 1024,
                 "pattern": r"^(?!.*(^|/)\.\.(/|$))[^\u0000-\u001f\u007f]*$", "default": "/",
                 "description": "Folder on the server for the archives; created if missing"},
        "tls": {"type": "boolean", "title": "Explicit FTPS (TLS)", "default": False},
        "tls_ca": {"type": "string", "title": "CA certificate (PEM)", "maxLength": 65536,
                   "pattern": r"^[\t\n\r\x20-\x7e]*$",  # PEM is ASCII (ssl refuses more)
                   "description": "Verify the server's TLS certificate (and host) against "
                                  "this CA; when empty the connection is encrypted but the "
                                  "server is not authenticated"},
        "passive": {"type": "boolean", "title": "Passive mode", "default": True},
        "timeout": {"type": "number", "title": "Timeout (s)", "minimum": 1, "maximum": 300,
                    "default": 10},
    },
}


class FtpTarget(BackupTarget):
    """A folder on an FTP or FTPS server (REST/APPE resume, RNFR/RNTO publish)."""

    name: ClassVar[str] = "ftp"
    description: ClassVar[str] = "A folder on an FTP server (FTP or explicit FTPS)"
    resumable: ClassVar[bool] = True
    options_schema: ClassVar[dict[str, Any]] = OPTIONS_SCHEMA

    def _session(self, create: bool = False) -> FtpSession:
        return FtpSession(self.options).open(create)

    def check(self) -> None:
        probe = f".hvp-probe-{secrets.token_hex(4)}"
        with self._session(create=True) as session:
            with session.guard(f"writing a test file into {session.folder}"):
                session.client.storbinary(f"STOR {probe}", io.BytesIO(b"probe"))
                if session.size(probe) != 5:
                    raise session.error(f"FTP server {session.where} did not keep a test "
                                        f"file in {session.folder}")
            with session.guard(f"deleting the test file {probe}"):
                session.client.delete(probe)

    def open_write(self, name: str, resume: bool = False) -> FtpWriter:
        check_archive_name(name)
        return FtpWriter(self._session(create=True), name, resume)

    def open_read(self, name: str, offset: int = 0,
                  length: int | None = None) -> Iterator[bytes]:
        check_archive_name(name)
        if offset < 0 or (length is not None and length < 0):
            raise TargetError(f"bad range {offset}+{length} for archive {name}")
        session = self._session()
        try:
            size = session.size(name)
        except BaseException:
            session.close()
            raise
        if size is None:
            session.close()
            raise session.error(f"no archive {name} in {session.folder} on FTP server "
                                f"{session.where}")
        return FtpReader(session, name, offset, 0 if offset >= size else length)

    def list(self, folder: str = "") -> list[TargetEntry]:
        with self._session() as session:
            return entries(session, folder, partial=False)

    def list_partial(self) -> list[TargetEntry]:
        with self._session() as session:
            return entries(session, "", partial=True)

    def stat(self, name: str) -> TargetEntry | None:
        check_archive_name(name)
        with self._session() as session, session.guard(f"looking up {name}"):
            size = session.size(name)
            if size is None:
                return None
            try:
                mtime = ftp_time(session.client.sendcmd(f"MDTM {name}")[4:])
            except ftplib.error_perm:
                mtime = None
            return TargetEntry(name, size, mtime)

    def _delete(self, path: str, what: str) -> None:
        with self._session() as session, session.guard(f"deleting {what}"):
            try:
                session.client.delete(path)
            except ftplib.error_perm:
                if session.size(path) is not None:
                    raise
                # already gone

    def delete(self, name: str) -> None:
        self._delete(check_archive_name(name), f"archive {name}")

    def delete_partial(self, name: str) -> None:
        self._delete(partial_name(name), f"the partial upload of {name}")
