"""The ``ftp`` source: an index on an FTP server (passive mode); REST resumes downloads."""

from __future__ import annotations

import contextlib
import ftplib
import io
import posixpath
import socket
import urllib.parse
from typing import Any, BinaryIO, ClassVar

from hypervisor_panel.os_templates import (
    INDEX_MAX_BYTES,
    BadIndex,
    OSTemplateSource,
    SourceUnavailable,
    TemplateEntry,
    check_relative_path,
    parse_index,
)


class _DataStream:
    """The data connection of one RETR; close() ends the transfer and the session."""

    def __init__(self, ftp: ftplib.FTP, conn: socket.socket) -> None:
        self.ftp, self.conn = ftp, conn
        self.fh = conn.makefile("rb")
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        block = self.fh.read(size)
        if not block:
            self.ended = True
        return block

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        self.fh.close()
        self.conn.close()
        try:
            if self.ended:
                self.ftp.voidresp()
            self.ftp.quit()
        except (*ftplib.all_errors, EOFError):
            pass
        self.ftp.close()


class FtpSource(OSTemplateSource):
    """An ``index.json`` on an FTP server; files are fetched relative to it."""

    name: ClassVar[str] = "ftp"
    description: ClassVar[str] = "An index.json on an FTP server (passive mode)"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["url"],
        "properties": {
            "url": {"type": "string", "title": "Index URL", "pattern": r"^ftp://[^\s]+$",
                    "maxLength": 2048, "description": "ftp://host[:port]/path/index.json"},
            "username": {"type": "string", "maxLength": 128, "default": "anonymous"},
            "password": {"type": "string", "maxLength": 256, "writeOnly": True,
                         "default": "anonymous@"},
            "timeout": {"type": "number", "title": "Timeout (s)", "minimum": 1,
                        "maximum": 300, "default": 15},
        },
    }

    def _where(self, options: dict[str, Any]) -> tuple[str, int, str]:
        url = urllib.parse.urlsplit(options["url"])
        try:
            port = url.port or 21
        except ValueError as exc:
            raise BadIndex(f"bad port in {options['url']!r}", code="bad_url") from exc
        if not url.hostname or not url.path or url.path.endswith("/"):
            raise BadIndex(f"{options['url']!r} names no index file", code="bad_url")
        return url.hostname, port, urllib.parse.unquote(url.path)

    def _login(self, options: dict[str, Any]) -> ftplib.FTP:
        host, port, _path = self._where(options)
        ftp = ftplib.FTP()  # noqa: S321 - FTP repositories are what this source reads
        try:
            ftp.connect(host, port, timeout=options.get("timeout", 15))
            ftp.login(options.get("username", "anonymous"),
                      options.get("password", "anonymous@"))
            ftp.set_pasv(True)
            ftp.voidcmd("TYPE I")
        except (*ftplib.all_errors, EOFError) as exc:
            ftp.close()
            raise SourceUnavailable(f"FTP {host}:{port}: {exc or type(exc).__name__}") from exc
        return ftp

    def read_index(self, options: dict[str, Any]) -> list[TemplateEntry]:
        path = self._where(options)[2]
        ftp = self._login(options)
        buf = io.BytesIO()

        def take(block: bytes) -> None:
            if buf.tell() > INDEX_MAX_BYTES:
                raise BadIndex(f"{options['url']} is larger than {INDEX_MAX_BYTES} bytes")
            buf.write(block)

        try:
            ftp.retrbinary(f"RETR {path}", take)
            ftp.quit()
        except (*ftplib.all_errors, EOFError) as exc:
            raise SourceUnavailable(f"cannot fetch {options['url']}: {exc}") from exc
        finally:
            ftp.close()
        return parse_index(buf.getvalue(), options["url"])

    def open(self, options: dict[str, Any], entry: TemplateEntry,
             offset: int = 0) -> tuple[BinaryIO, int]:
        index_path = self._where(options)[2]
        path = posixpath.join(posixpath.dirname(index_path), check_relative_path(entry["file"]))
        ftp = self._login(options)
        try:
            size = ftp.size(path)
            conn = ftp.transfercmd(f"RETR {path}", rest=offset or None)
        except (*ftplib.all_errors, EOFError) as exc:
            ftp.close()
            raise SourceUnavailable(f"cannot fetch {path}: {exc}") from exc
        if size is None:
            conn.close()
            ftp.close()
            raise SourceUnavailable(f"the FTP server gives no size for {path}")
        return _DataStream(ftp, conn), size  # type: ignore[return-value]
