"""One FTP(S) control connection of an ``ftp`` target: connect, log in, enter the folder.

Every failure becomes a :class:`TargetError` that names the server and says what failed;
the password never appears in a message (:meth:`FtpSession.error` removes it).
"""

from __future__ import annotations

import contextlib
import ftplib
import ssl
from collections.abc import Iterator
from typing import Any

from hypervisor_panel.backup import TargetError

CONTROL_CHARS = frozenset(chr(c) for c in (*range(32), 127))
#: The longest a broken session waits for a reply before calling the connection lost.
POKE_TIMEOUT = 5.0


def describe(exc: BaseException) -> str:
    """A short text for an exception (``str(exc)`` can be empty: EOFError)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text or type(exc).__name__


def reply_code(exc: BaseException) -> str:
    return str(exc)[:3]


class FtpSession:
    """A logged-in FTP or explicit-FTPS connection, in the target's folder after :meth:`open`."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.host = str(options.get("host") or "")
        self.port = int(options.get("port") or 21)
        self.user = str(options.get("username") or "anonymous")
        self.password = str(options.get("password") or "")
        self.tls = bool(options.get("tls", False))
        self.tls_ca = options.get("tls_ca") or None
        self.passive = bool(options.get("passive", True))
        self.timeout = float(options.get("timeout") or 10)
        self.folder = str(options.get("path") or "/")
        self.where = f"{self.host}:{self.port}"
        self.ftp: ftplib.FTP | None = None
        self.broken = False
        for what, value in (("host", self.host), ("username", self.user),
                            ("password", self.password), ("path", self.folder)):
            if CONTROL_CHARS & set(value):
                raise TargetError(f"the FTP {what} contains control characters")
        if not self.host:
            raise TargetError("the FTP target needs a host")
        if ".." in self.folder.split("/"):
            raise TargetError(f"the FTP folder {self.folder!r} must not contain '..'")

    # -- errors ---------------------------------------------------------------------------
    def error(self, message: str) -> TargetError:
        """A TargetError whose message never contains the password."""
        if self.password:
            message = message.replace(self.password, "***")
        return TargetError(message)

    @contextlib.contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Turn what ftplib raises while ``doing`` into a clear :class:`TargetError`."""
        try:
            yield
        except TargetError:
            raise
        except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply,
                ftplib.error_proto) as exc:
            if reply_code(exc) in ("452", "552"):
                raise self.error(f"FTP server {self.where} is full ({exc}) while "
                                 f"{doing}") from exc
            raise self.error(f"FTP server {self.where} refused {doing}: {exc}") from exc
        except TimeoutError as exc:
            self.broken = True
            raise self.error(f"FTP server {self.where} did not answer in {self.timeout:g} s "
                             f"while {doing}") from exc
        except ssl.SSLError as exc:
            self.broken = True
            raise self.error(f"TLS error with FTP server {self.where} while {doing}: "
                             f"{describe(exc)}") from exc
        except (OSError, EOFError) as exc:
            self.broken = True
            raise self.error(f"the connection to FTP server {self.where} was lost while "
                             f"{doing}: {describe(exc)}") from exc

    # -- opening and closing --------------------------------------------------------------
    def _client(self) -> ftplib.FTP:
        if not self.tls:
            return ftplib.FTP(timeout=self.timeout)  # noqa: S321 - plain FTP is an option
        if self.tls_ca:
            try:
                context = ssl.create_default_context(cadata=self.tls_ca)
            except (ssl.SSLError, TypeError, ValueError) as exc:  # not a PEM certificate
                raise self.error(f"the CA certificate (tls_ca) is not usable: {exc}") from exc
        else:  # encrypted, not authenticated (self-signed servers): like ftplib's default
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return ftplib.FTP_TLS(timeout=self.timeout, context=context)  # noqa: S321 - TLS

    def _connect(self, ftp: ftplib.FTP) -> None:
        try:
            ftp.connect(self.host, self.port, timeout=self.timeout)
        except TimeoutError as exc:
            raise self.error(f"could not connect to FTP server {self.where} in "
                             f"{self.timeout:g} s (no answer)") from exc
        except ConnectionRefusedError as exc:
            raise self.error(f"could not connect to FTP server {self.where}: "
                             f"connection refused") from exc
        except (OSError, EOFError) as exc:
            raise self.error(f"could not connect to FTP server {self.where}: "
                             f"{describe(exc)}") from exc
        except ftplib.Error as exc:
            raise self.error(f"FTP server {self.where} refused the connection: {exc}") from exc

    def _secure(self, ftp: ftplib.FTP_TLS) -> None:
        try:
            ftp.auth()
        except ftplib.error_perm as exc:
            raise self.error(f"FTP server {self.where} does not offer TLS "
                             f"(AUTH TLS: {exc})") from exc
        except ssl.SSLError as exc:
            raise self.error(f"the TLS handshake with FTP server {self.where} failed: "
                             f"{describe(exc)}") from exc

    def _login(self, ftp: ftplib.FTP) -> None:
        try:
            ftp.login(self.user, self.password)
        except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply) as exc:
            raise self.error(f"FTP server {self.where} refused the login for user "
                             f"{self.user!r}: {exc}") from exc

    def open(self, create: bool = False) -> FtpSession:
        """Connect, log in, binary mode, enter the folder (made when ``create``)."""
        ftp = self.ftp = self._client()
        try:
            self._connect(ftp)
            if isinstance(ftp, ftplib.FTP_TLS):
                self._secure(ftp)
            with self.guard(f"logging in as {self.user!r}"):
                self._login(ftp)
                if isinstance(ftp, ftplib.FTP_TLS):
                    ftp.prot_p()
                ftp.set_pasv(self.passive)
                ftp.voidcmd("TYPE I")
            self._enter(create)
        except BaseException:
            self.close()
            raise
        return self

    def _enter(self, create: bool) -> None:
        ftp = self.ftp
        assert ftp is not None
        with self.guard(f"entering the folder {self.folder}"):
            try:
                ftp.cwd(self.folder)
                return
            except ftplib.error_perm:
                if not create:
                    raise self.error(f"the folder {self.folder} does not exist on FTP server "
                                     f"{self.where}") from None
        with self.guard(f"creating the folder {self.folder}"):
            if self.folder.startswith("/"):
                ftp.cwd("/")
            for part in filter(None, self.folder.split("/")):
                try:
                    ftp.cwd(part)
                except ftplib.error_perm:
                    ftp.mkd(part)
                    ftp.cwd(part)

    def close(self) -> None:
        """Say goodbye when the connection still works; close it in any case."""
        ftp, self.ftp = self.ftp, None
        if ftp is None:
            return
        if not self.broken and ftp.sock is not None:
            with contextlib.suppress(*ftplib.all_errors, EOFError):
                ftp.sock.settimeout(min(self.timeout, POKE_TIMEOUT))
                ftp.quit()
        ftp.close()

    def __enter__(self) -> FtpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- small commands -------------------------------------------------------------------
    @property
    def client(self) -> ftplib.FTP:
        if self.ftp is None:
            raise self.error(f"the session with FTP server {self.where} is closed")
        return self.ftp

    def size(self, path: str) -> int | None:
        """SIZE of a file, None when there is none (a folder answers 550 as well)."""
        try:
            return self.client.size(path)
        except ftplib.error_perm:
            return None

    def delete_quiet(self, path: str) -> None:
        """DELE ``path``; an error (already gone, connection lost) is ignored."""
        with contextlib.suppress(*ftplib.all_errors, EOFError, TargetError):
            self.client.delete(path)

    def poke(self) -> str | None:
        """After a broken data connection: the transfer's reply ("" when the server gave
        none), or None when the control connection is gone as well."""
        ftp = self.client
        try:
            if ftp.sock is not None:
                ftp.sock.settimeout(min(self.timeout, POKE_TIMEOUT))
            ftp.putcmd("NOOP")
            first = ftp.getmultiline()
            if first.startswith("200"):
                return ""
            with contextlib.suppress(*ftplib.all_errors, EOFError):
                ftp.getmultiline()  # the NOOP's own reply
            return first
        except (*ftplib.all_errors, EOFError):
            self.broken = True
            return None
        finally:
            if ftp.sock is not None:
                with contextlib.suppress(OSError):
                    ftp.sock.settimeout(self.timeout)
