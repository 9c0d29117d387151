"""SSH to nodes with paramiko: host keys are pinned, never accepted silently.

The admin confirms a node's host-key fingerprint once (``fetch_host_key``); from then on
every connection checks the key against the pinned one and a changed key is an error.
Commands are fixed argument lists joined with ``shlex.join``: no user input reaches a shell.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shlex
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import paramiko

from ..errors import Conflict, Invalid, Unavailable

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0


class HostKeyMismatch(Conflict):
    code = "host_key_changed"


@dataclass(frozen=True)
class HostKey:
    key_type: str
    base64: str

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(base64.b64decode(self.base64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def line(self) -> str:
        return f"{self.key_type} {self.base64}"

    def known_hosts_line(self, host: str, port: int) -> str:
        name = host if port == 22 else f"[{host}]:{port}"
        return f"{name} {self.line}\n"

    def to_paramiko(self) -> paramiko.PKey:
        return paramiko.PKey.from_type_string(self.key_type, base64.b64decode(self.base64))

    @classmethod
    def from_paramiko(cls, key: paramiko.PKey) -> HostKey:
        return cls(key.get_name(), key.get_base64())


def _socket(host: str, port: int) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except socket.gaierror as exc:
        raise Invalid(f"cannot resolve host {host!r}: {exc.strerror}",
                      code="host_unknown") from exc
    except OSError as exc:
        raise Unavailable(f"cannot reach {host}:{port}: {exc.strerror or exc}",
                          code="ssh_unreachable") from exc


def fetch_host_key(host: str, port: int) -> HostKey:
    """The node's SSH host key, read without logging in (for the admin to confirm)."""
    sock = _socket(host, port)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=CONNECT_TIMEOUT)
        return HostKey.from_paramiko(transport.get_remote_server_key())
    except paramiko.SSHException as exc:
        raise Unavailable(f"{host}:{port} does not speak SSH: {exc}",
                          code="ssh_unreachable") from exc
    finally:
        transport.close()


def load_private_key(text: str) -> paramiko.PKey:
    """Parse an OpenSSH/PEM private key (ed25519, ECDSA or RSA)."""
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise Invalid("ssh_private_key is not a readable unencrypted private key",
                  code="bad_private_key")


@contextmanager
def session(host: str, port: int, username: str, pinned: HostKey, *,
            pkey: paramiko.PKey | None = None,
            password: str | None = None) -> Iterator[paramiko.SSHClient]:
    """An authenticated SSH client whose server key must equal ``pinned``."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    name = host if port == 22 else f"[{host}]:{port}"
    client.get_host_keys().add(name, pinned.key_type, pinned.to_paramiko())
    try:
        try:
            client.connect(host, port=port, username=username, pkey=pkey, password=password,
                           timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT,
                           auth_timeout=CONNECT_TIMEOUT, allow_agent=False,
                           look_for_keys=False)
        except BaseException:
            client.close()  # a failed connect keeps its transport thread otherwise
            raise
    except paramiko.BadHostKeyException as exc:
        raise HostKeyMismatch(
            f"the SSH host key of {host}:{port} changed (now "
            f"{HostKey.from_paramiko(exc.key).fingerprint}, pinned {pinned.fingerprint}); "
            "refusing to connect") from exc
    except paramiko.AuthenticationException as exc:
        raise Invalid(f"SSH login as {username!r} on {host}:{port} failed: {exc}",
                      code="ssh_auth_failed") from exc
    except (paramiko.SSHException, OSError) as exc:
        raise Unavailable(f"SSH to {host}:{port} failed: {exc}",
                          code="ssh_unreachable") from exc
    try:
        yield client
    finally:
        client.close()


def run(client: paramiko.SSHClient, argv: list[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a fixed command; return stdout, raise with stderr on a non-zero exit."""
    _stdin, stdout, stderr = client.exec_command(shlex.join(argv), timeout=timeout)
    out = stdout.read().decode(errors="replace")
    status = stdout.channel.recv_exit_status()
    if status != 0:
        err = stderr.read().decode(errors="replace").strip()
        raise Invalid(f"{argv[0]} failed on the node ({status}): {err[:300]}",
                      code="node_command_failed")
    return out


def install_key(client: paramiko.SSHClient, public_line: str) -> None:
    """Append the panel's public key to the login user's authorized_keys (over SFTP)."""
    sftp = client.open_sftp()
    try:
        home = sftp.normalize(".")
        ssh_dir = f"{home}/.ssh"
        try:
            sftp.stat(ssh_dir)
        except FileNotFoundError:
            sftp.mkdir(ssh_dir, 0o700)
        path = f"{ssh_dir}/authorized_keys"
        try:
            with sftp.open(path, "r") as fh:
                current = fh.read().decode(errors="replace")
        except FileNotFoundError:
            current = ""
        if public_line.strip() not in current:
            with sftp.open(path, "a") as fh:
                fh.write(("" if not current or current.endswith("\n") else "\n")
                         + public_line.strip() + "\n")
            sftp.chmod(path, 0o600)
    finally:
        sftp.close()
