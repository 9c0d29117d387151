"""Reading a published archive from an ``ftp`` target: RETR with REST, stop after a length."""

from __future__ import annotations

import contextlib
import ftplib
import socket
import ssl
from collections.abc import Iterator

from .session import FtpSession, describe

CHUNK = 256 * 1024


class FtpReader(Iterator[bytes]):
    """The bytes of one RETR, ``length`` of them at most; the session ends with the stream."""

    def __init__(self, session: FtpSession, name: str, offset: int, length: int | None) -> None:
        self.session, self.name = session, name
        self.left = length
        self.position = offset
        self.conn: socket.socket | None = None
        if length == 0:
            session.close()
            return
        with session.guard(f"reading {name}"):
            try:
                self.conn = session.client.transfercmd(f"RETR {name}", rest=offset or None)
            except BaseException:
                session.close()
                raise

    def __iter__(self) -> FtpReader:
        return self

    def __next__(self) -> bytes:
        if self.conn is None:
            raise StopIteration
        want = CHUNK if self.left is None else min(CHUNK, self.left)
        if not want:  # ``length`` bytes were read: stop the transfer
            self._end(eof=False)
            raise StopIteration
        try:
            block = self.conn.recv(want)
        except OSError as exc:
            self.close()
            raise self.session.error(
                f"the connection to FTP server {self.session.where} was lost while reading "
                f"{self.name} at byte {self.position}: {describe(exc)}") from exc
        if not block:
            self._end(eof=True)
            raise StopIteration
        self.position += len(block)
        if self.left is not None:
            self.left -= len(block)
        return block

    def _end(self, eof: bool) -> None:
        """``eof``: the server sent everything (check its 226); else stop early."""
        conn, self.conn = self.conn, None
        session = self.session
        if conn is not None and eof:
            try:
                with session.guard(f"reading {self.name}"):
                    if isinstance(conn, ssl.SSLSocket):
                        conn.unwrap()
                    conn.close()
                    session.client.voidresp()
            finally:
                conn.close()
                session.close()
            return
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
        session.broken = True  # a reply to an aborted RETR may or may not come: just close
        with contextlib.suppress(*ftplib.all_errors):
            session.close()

    def close(self) -> None:
        """Stop reading (also what a ``for`` loop left early should call)."""
        self._end(eof=False)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
