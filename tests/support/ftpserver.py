"""A real FTP or FTPS server (pyftpdlib) in its own process on 127.0.0.1, for backup tests.

:class:`FtpServer` runs ``python -m tests.support.ftpserver pyftpdlib CONFIG`` (the word
``pyftpdlib`` in the command line lets the leftover check see it) with one user, a password
and a home folder ``<folder>/home``. ``tls=True`` serves explicit FTPS (pyftpdlib's
``TLS_FTPHandler``, TLS required on control and data connections) with a certificate for
127.0.0.1 made at test time with ``cryptography``. ``full_size="8m"`` mounts a tmpfs of that
size at ``<home>/full`` (root only), so an upload into ``/full`` runs out of space;
``upload_rate`` makes the server read uploads that slowly (a stalled server).

:meth:`FtpServer.kill` is a SIGKILL (connections break in the middle); :meth:`restart`
starts it again on the same port and folder. :meth:`close` (or leaving the ``with`` block)
stops the process and unmounts the tmpfs; the caller's folder (a ``tmp_path``) goes with
pytest's temporary folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.servers import REPO_ROOT, free_port, self_signed

USER = "backup"


class FtpServer:
    """One pyftpdlib process serving ``home`` to ``user``/``password`` on 127.0.0.1:port."""

    def __init__(self, folder: Path, *, tls: bool = False, user: str = USER,
                 password: str | None = None, full_size: str | None = None,
                 upload_rate: int = 0) -> None:
        self.folder = Path(folder)
        self.home = self.folder / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.tls, self.user = tls, user
        self.upload_rate = upload_rate  # bytes/s the server reads uploads at (0: no limit)
        self.password = password or "pw-" + secrets.token_urlsafe(12)
        self.port = free_port()
        self.cert = self_signed(self.folder) if tls else None
        self.full = self.home / "full" if full_size else None
        self.proc: subprocess.Popen | None = None
        self.log_path = self.folder / "pyftpdlib.log"
        if full_size:
            self._mount(full_size)

    # -- the tmpfs ------------------------------------------------------------------------
    def _mount(self, size: str) -> None:
        assert self.full is not None
        self.full.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                        "hvp-ftp-full", str(self.full)], check=True, capture_output=True)

    def _unmount(self) -> None:
        if self.full is None or not os.path.ismount(self.full):
            return
        done = subprocess.run(["umount", str(self.full)], capture_output=True, check=False)
        if done.returncode:
            subprocess.run(["umount", "-l", str(self.full)], capture_output=True, check=False)

    # -- the process ----------------------------------------------------------------------
    def _write_config(self) -> Path:
        conf = self.folder / "server.json"
        conf.write_text(json.dumps({
            "home": str(self.home), "port": self.port, "user": self.user,
            "password": self.password, "log": str(self.log_path),
            "cert": [str(p) for p in self.cert] if self.cert else None,
            "upload_rate": self.upload_rate,
        }))
        conf.chmod(0o600)
        return conf

    def start(self) -> FtpServer:
        cmd = [sys.executable, "-m", "tests.support.ftpserver", "pyftpdlib",
               str(self._write_config())]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not (self.folder / f"ready-{self.proc.pid}").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pyftpdlib did not start on 127.0.0.1:{self.port}: "
                                   f"{self.log()[-2000:]}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL: every connection breaks where it is."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> FtpServer:
        """Start again on the same port and folder (after :meth:`kill` or :meth:`stop`)."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._unmount()

    def __enter__(self) -> FtpServer:
        try:
            return self.start()
        except BaseException:
            self.close()  # the tmpfs too
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for tests ------------------------------------------------------------------------
    def options(self, **extra: Any) -> dict[str, Any]:
        """Options of an ``ftp`` backup target for this server."""
        return {"host": "127.0.0.1", "port": self.port, "username": self.user,
                "password": self.password, "tls": self.tls, "path": "/backups",
                "timeout": 5, **extra}

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def _serve(config_path: str) -> None:
    import logging

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    conf = json.loads(Path(config_path).read_text())
    logging.basicConfig(filename=conf["log"], level=logging.INFO, format="%(message)s")
    authorizer = DummyAuthorizer()
    authorizer.add_user(conf["user"], conf["password"], conf["home"], perm="elradfmwMT")
    # A failed login answers after 0.1 s instead of pyftpdlib's 3 s (the tests try many).
    attrs: dict[str, Any] = {"authorizer": authorizer, "banner": "hvp test ftpd",
                             "auth_failed_timeout": 0.1}
    base: type = FTPHandler
    if conf["cert"]:
        from pyftpdlib.handlers import TLS_FTPHandler

        base = TLS_FTPHandler
        attrs.update(certfile=conf["cert"][0], keyfile=conf["cert"][1],
                     tls_control_required=True, tls_data_required=True)
    if conf["upload_rate"]:
        from pyftpdlib.handlers import ThrottledDTPHandler

        attrs["dtp_handler"] = type("Throttled", (ThrottledDTPHandler,),
                                    {"read_limit": conf["upload_rate"], "write_limit": 0})
    server = FTPServer(("127.0.0.1", conf["port"]), type("Handler", (base,), attrs))
    (Path(config_path).parent / f"ready-{os.getpid()}").touch()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "pyftpdlib":
        _serve(sys.argv[2])
    else:
        sys.exit("usage: python -m tests.support.ftpserver pyftpdlib CONFIG.json")
