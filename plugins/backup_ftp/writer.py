"""Uploading one archive to an ``ftp`` target: STOR (or REST+STOR / APPE to resume) into
``.partial-NAME`` on a data connection driven here, then SIZE check and RNFR/RNTO.

A broken upload is sorted by what the control connection says afterwards:

* the control connection is gone too (server killed, network down): the partial file is
  kept, so ``open_write(name, resume=True)`` continues after what the server holds;
* the server is alive and ended the transfer (426/452/552, or silently as pyftpdlib does
  over TLS when its disk is full): the partial file is deleted, because the server keeps
  it and a full disk would stay full.
"""

from __future__ import annotations

import contextlib
import ftplib
import posixpath
import re
import socket
import ssl

from hypervisor_panel.backup import ArchiveWriter, TargetEntry, TargetError, partial_name

from .listing import ftp_time
from .session import FtpSession, describe, reply_code

#: Each sendall() gets at most this much, so the socket timeout bounds a stall, not a chunk.
SEND_BLOCK = 256 * 1024
FULL_WORDS = re.compile(r"space|quota|full|disk", re.IGNORECASE)


class FtpWriter(ArchiveWriter):
    """An upload in progress; ``offset`` is what the server held when it started."""

    resumable = True

    def __init__(self, session: FtpSession, name: str, resume: bool) -> None:
        self.session, self.name = session, name
        self.temp = partial_name(name)
        self.published = False
        self.written = 0
        self.conn: socket.socket | None = None
        try:
            self._start(resume)
        except BaseException:
            session.close()
            raise

    def _start(self, resume: bool) -> None:
        session = self.session
        folder = posixpath.dirname(self.name)
        with session.guard(f"starting the upload of {self.name}"):
            if folder:
                with contextlib.suppress(ftplib.error_perm):
                    session.client.mkd(folder)  # 550 when it exists already
            self.offset = (session.size(self.temp) or 0) if resume else 0
            try:
                self.conn = self._transfer()
            except (ftplib.error_temp, ftplib.error_perm) as exc:
                if reply_code(exc) in ("452", "552"):
                    raise self._refused(str(exc)) from exc
                raise

    def _transfer(self) -> socket.socket:
        ftp = self.session.client
        if not self.offset:
            return ftp.transfercmd(f"STOR {self.temp}")
        try:
            return ftp.transfercmd(f"STOR {self.temp}", rest=self.offset)
        except ftplib.error_perm as exc:
            if reply_code(exc) not in ("500", "501", "502", "504"):
                raise
            return ftp.transfercmd(f"APPE {self.temp}")  # no REST for STOR: append instead

    # -- failures -------------------------------------------------------------------------
    def _close_data(self, polite: bool = False) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if polite and isinstance(conn, ssl.SSLSocket):
                conn.unwrap()
        finally:
            conn.close()

    def _refused(self, reply: str) -> TargetError:
        """The server is alive and ended the upload: remove the partial file it keeps."""
        session, done = self.session, self.offset + self.written
        session.delete_quiet(self.temp)
        session.close()
        if reply_code(reply) in ("452", "552") or FULL_WORDS.search(reply):
            return session.error(f"FTP server {session.where} is full ({reply.strip()}): the "
                                 f"upload of {self.name} stopped after {done} bytes; the "
                                 f"partial upload was removed")
        return session.error(
            f"FTP server {session.where} aborted the upload of {self.name} after {done} bytes "
            f"({reply.strip() or 'no reply'}); the target is probably full or over quota "
            f"(452/426); the partial upload was removed")

    def _broken(self, exc: BaseException) -> TargetError:
        """The data connection failed: lost (keep the partial file) or refused (remove it)."""
        with contextlib.suppress(OSError):
            self._close_data()
        session, done = self.session, self.offset + self.written
        if isinstance(exc, TimeoutError):  # a stalled server: nothing was refused
            session.broken = True
            session.close()
            return session.error(
                f"FTP server {session.where} accepted no data for {session.timeout:g} s "
                f"while uploading {self.name} after sending {done} bytes; the partial upload "
                f"is kept to resume")
        reply = session.poke() if session.ftp is not None else None
        if reply is not None:
            return self._refused(reply)
        session.close()
        return session.error(
            f"the connection to FTP server {session.where} was lost while uploading "
            f"{self.name} after sending {done} bytes ({describe(exc)}); the partial upload is kept "
            f"to resume")

    # -- the contract ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.conn is None:
            raise self.session.error(f"the upload of {self.name} is not open")
        view = memoryview(data)
        try:
            for start in range(0, len(view), SEND_BLOCK):
                self.conn.sendall(view[start:start + SEND_BLOCK])
        except OSError as exc:
            raise self._broken(exc) from exc
        self.written += len(data)

    def _finish_transfer(self) -> None:
        try:
            self._close_data(polite=True)
        except OSError as exc:
            raise self._broken(exc) from exc
        try:
            self.session.client.voidresp()  # 226
        except (ftplib.error_temp, ftplib.error_perm, ftplib.error_reply) as exc:
            raise self._refused(str(exc)) from exc
        except (OSError, EOFError) as exc:
            self.session.broken = True
            raise self._broken(exc) from exc

    def publish(self, expected_size: int) -> TargetEntry:
        session = self.session
        if self.conn is None:
            raise session.error(f"the upload of {self.name} is not open")
        self._finish_transfer()
        try:
            with session.guard(f"publishing {self.name}"):
                size = session.size(self.temp)
                if size != expected_size:
                    if size is not None and size > expected_size:
                        session.delete_quiet(self.temp)
                    held = "nothing" if size is None else f"{size} bytes"
                    raise session.error(
                        f"FTP server {session.where} holds {held} of {self.name}, "
                        f"{expected_size} bytes expected; not published")
                self._rename()
                entry = TargetEntry(self.name, size, self._mtime())
        finally:
            session.close()
        self.published = True
        return entry

    def _rename(self) -> None:
        ftp = self.session.client
        try:
            ftp.rename(self.temp, self.name)
        except ftplib.error_perm:  # some servers refuse to overwrite: delete the old one
            if self.session.size(self.name) is None:
                raise
            ftp.delete(self.name)
            ftp.rename(self.temp, self.name)

    def _mtime(self) -> float | None:
        try:
            return ftp_time(self.session.client.sendcmd(f"MDTM {self.name}")[4:])
        except ftplib.Error:
            return None

    def abort(self, keep_partial: bool = False) -> None:
        session = self.session
        if self.conn is not None:
            with contextlib.suppress(OSError):  # politely: an abrupt close can drop data
                self._close_data(polite=True)
            if session.ftp is not None:
                with contextlib.suppress(*ftplib.all_errors):
                    session.client.voidresp()  # the server took the close as the end
        if not keep_partial and session.ftp is not None and not session.broken:
            session.delete_quiet(self.temp)
        session.close()
