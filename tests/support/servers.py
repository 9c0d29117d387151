"""Local repository servers for tests: HTTP(S) in a thread, FTP (pyftpdlib) as a process.

* :class:`HttpRepo` serves a folder on 127.0.0.1 with Range support; ``drop_after``
  cuts a response's connection after so many body bytes (once), ``requests`` records
  what was asked (path, Range header), ``chunk_delay`` slows it down.
  ``tls=(cert, key)`` serves HTTPS.
* :class:`FtpRepo` runs pyftpdlib in its own process (``python -m tests.support.servers
  pyftpdlib ...``) so a test can kill it in the middle of a transfer and start it again
  on the same port; ``rate`` throttles downloads (bytes/s); its log records REST/RETR.
* :func:`self_signed` makes a certificate for 127.0.0.1 (HTTPS tests).
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RANGE = re.compile(r"^bytes=(\d+)-$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        repo = self.server.repo
        rel = self.path.split("?")[0].lstrip("/")
        repo.requests.append((rel, self.headers.get("Range")))
        path = (repo.root / rel).resolve()
        if not path.is_relative_to(repo.root) or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        match = RANGE.match(self.headers.get("Range") or "")
        start = int(match.group(1)) if match and not repo.ignore_range else 0
        if start >= size > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self._send(path, start, repo.drop_after.pop(rel, None))

    def _send(self, path: Path, start: int, drop: int | None) -> None:
        sent = 0
        with open(path, "rb") as fh:
            fh.seek(start)
            while block := fh.read(64 * 1024):
                if drop is not None and sent + len(block) >= drop:
                    self.wfile.write(block[: drop - sent])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # the connection breaks
                    self.close_connection = True
                    return
                self.wfile.write(block)
                sent += len(block)
                time.sleep(self.server.repo.chunk_delay)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    repo: HttpRepo


class HttpRepo:
    """A folder served over HTTP(S) on 127.0.0.1 (see the module docstring)."""

    def __init__(self, root: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.root = Path(root).resolve()
        self.tls = tls
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: dict[str, int] = {}
        self.ignore_range = False
        self.chunk_delay = 0.0  # seconds between 64 KiB blocks (a slow server)
        self._server: _Server | None = None

    def __enter__(self) -> HttpRepo:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.repo = self
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def url(self, rel: str = "index.json") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/{rel}"


class FtpRepo:
    """A folder served by pyftpdlib in a separate process on 127.0.0.1."""

    def __init__(self, root: Path, log: Path, rate: int = 0, user: str | None = None,
                 password: str | None = None) -> None:
        self.root, self.log_path, self.rate = Path(root), Path(log), rate
        self.user, self.password = user, password
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> FtpRepo:
        cmd = [sys.executable, "-m", "tests.support.servers", "pyftpdlib", str(self.root),
               str(self.port), str(self.rate), str(self.log_path), self.user or "",
               self.password or ""]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: the connections break in the middle."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def __enter__(self) -> FtpRepo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, rel: str = "index.json") -> str:
        return f"ftp://127.0.0.1:{self.port}/{rel}"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def _serve_ftp(root: str, port: str, rate: str, log: str, user: str, password: str) -> None:
    import logging

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler
    from pyftpdlib.servers import FTPServer

    logging.basicConfig(filename=log, level=logging.INFO, format="%(message)s")
    authorizer = DummyAuthorizer()
    if user:
        authorizer.add_user(user, password, root, perm="elr")
    else:
        authorizer.add_anonymous(root, perm="elr")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer,
                                              "log_cmds_list": ["REST", "RETR", "SIZE"]})
    if int(rate):
        handler.dtp_handler = type("Throttled", (ThrottledDTPHandler,),
                                   {"write_limit": int(rate), "read_limit": 0})
    server = FTPServer(("127.0.0.1", int(port)), handler)
    server.serve_forever()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, written into ``folder`` (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "pyftpdlib":
        _serve_ftp(*sys.argv[2:])
    else:
        sys.exit("usage: python -m tests.support.servers pyftpdlib ROOT PORT RATE LOG USER PW")
