"""A two-node "cluster" on one machine, for tests: a private sshd and a SECOND libvirtd.

* :func:`start_sshd` runs ``scripts/services/sshd.sh``: a real OpenSSH sshd on 127.0.0.1
  (free port, its own ed25519 host key, ``AuthorizedKeysFile DIR/authorized_keys``,
  root logins with a key only).
* :func:`start_libvirtd2` runs ``scripts/services/libvirtd2.sh``: a second libvirtd (+
  virtlogd) in its own mount namespace with private /etc, /run, /var/lib, /var/cache and
  /var/log of libvirt under DIR/ns, another host UUID and its sockets in DIR/run. Live
  migration between ``qemu:///system`` and it works (TCP on 127.0.0.1).

Reaching the second daemon over SSH (see :meth:`Daemon2.ssh_uri`): the ssh session runs
in the ROOT mount namespace, where DIR/run/libvirt-sock is visible, and relays to it with
``nc -U`` (``proxy=netcat``; Debian package ``netcat-openbsd``). Use the ``libssh2``
transport: it honours ``known_hosts=`` (the default ``qemu+ssh`` transport runs OpenSSH,
which ignores that parameter and only reads ~/.ssh/known_hosts), and the ``libssh``
transport stalls on big replies (getCapabilities hangs without an event loop).

Keep DIR short, e.g. :func:`short_tempdir`: UNIX socket paths are limited to 107 bytes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parents[2]
SSHD_SCRIPT = REPO_ROOT / "scripts" / "services" / "sshd.sh"
LIBVIRTD2_SCRIPT = REPO_ROOT / "scripts" / "services" / "libvirtd2.sh"
LOOPBACK = "127.0.0.1"
SYSTEM_SERIAL_DIR = Path("/var/log/libvirt/qemu")

# What the second daemon's private directories are called under DIR/ns.
_PRIVATE = {
    "/etc/libvirt": "etc",
    "/run/libvirt": "run",
    "/var/lib/libvirt": "lib",
    "/var/cache/libvirt": "cache",
    "/var/log/libvirt": "log",
}


def short_tempdir(prefix: str = "hvpn2-") -> Path:
    """A new, short directory under /tmp (UNIX socket paths must stay < 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _run_script(script: Path, *args: str, timeout: float = 90,
                env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{script.name} {' '.join(args)} failed ({proc.returncode}): "
            f"{proc.stdout.strip()} {proc.stderr.strip()}"
        )
    return proc.stdout


def _read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


# --------------------------------------------------------------------------- sshd


@dataclass(frozen=True)
class Sshd:
    """A running sshd from scripts/services/sshd.sh."""

    dir: Path
    port: int
    host_key_pub: Path
    fingerprint: str  # "SHA256:..." as ssh-keygen -l prints it
    authorized_keys: Path
    pid: int
    host: str = LOOPBACK

    @property
    def host_key(self) -> tuple[str, str]:
        """(key type, base64 blob) of the server's host key, e.g. ("ssh-ed25519", "AAAA...")."""
        key_type, blob = self.host_key_pub.read_text().split()[:2]
        return key_type, blob

    def known_hosts_line(self) -> str:
        """The known_hosts line pinning this server's host key (``[host]:port type blob``)."""
        key_type, blob = self.host_key
        return f"[{self.host}]:{self.port} {key_type} {blob}"

    def authorize_key(self, public_key: str | Path) -> None:
        """Append an OpenSSH public key (its text, or a .pub file) to authorized_keys."""
        text = Path(public_key).read_text() if isinstance(public_key, Path) else public_key
        line = text.strip()
        existing = self.authorized_keys.read_text() if self.authorized_keys.exists() else ""
        if line not in existing.splitlines():
            with open(self.authorized_keys, "a") as fh:
                fh.write(line + "\n")


def start_sshd(dir: Path, password_auth: bool = False) -> Sshd:
    """Start (or find running) the sshd whose files live in ``dir``.

    ``password_auth``: PasswordAuthentication yes, but no account has a known
    password (root's is never set), so password logins always fail.
    """
    dir = Path(dir)
    _run_script(SSHD_SCRIPT, "start", str(dir), timeout=60,
                env={"SSHD_PASSWORD_AUTH": "1" if password_auth else "0"})
    env = _read_env(dir / "env")
    return Sshd(
        dir=dir.resolve(),
        port=int(env["SSHD_PORT"]),
        host_key_pub=Path(env["SSHD_HOST_KEY_PUB"]),
        fingerprint=env["SSHD_HOST_KEY_FINGERPRINT"],
        authorized_keys=Path(env["SSHD_AUTHORIZED_KEYS"]),
        pid=int(env["SSHD_PID"]),
    )


def stop_sshd(dir: Path) -> None:
    """Stop the sshd of ``dir`` (by its PID; no-op when not running)."""
    _run_script(SSHD_SCRIPT, "stop", str(dir), timeout=30)


def write_known_hosts(sshd: Sshd, path: Path, append: bool = False) -> Path:
    """Write (or append) the known_hosts line of ``sshd``'s host key to ``path``."""
    path = Path(path)
    with open(path, "a" if append else "w") as fh:
        fh.write(sshd.known_hosts_line() + "\n")
    path.chmod(0o600)
    return path


def make_client_key(path: Path, comment: str = "hvp-test-client") -> tuple[Path, Path]:
    """Create an unencrypted ed25519 key pair at ``path`` (+ ``.pub``); return both paths."""
    path = Path(path)
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path, path.with_name(path.name + ".pub")


def write_ssh_command_wrapper(path: Path, known_hosts: Path) -> Path:
    """An ``ssh`` wrapper pinning ``known_hosts``, for ``qemu+ssh://...&command=PATH``.

    The OpenSSH-based ``qemu+ssh`` transport ignores ``known_hosts=``; this wrapper makes
    it check the given file strictly instead of ~/.ssh/known_hosts.
    """
    path = Path(path)
    path.write_text(
        "#!/bin/sh\n"
        f"exec /usr/bin/ssh -F /dev/null -o UserKnownHostsFile={known_hosts} "
        "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "
        "-o ConnectTimeout=10 \"$@\"\n"
    )
    path.chmod(0o755)
    return path


# ----------------------------------------------------------------- second libvirtd


@dataclass(frozen=True)
class Daemon2:
    """A running second libvirtd from scripts/services/libvirtd2.sh."""

    dir: Path
    socket: Path
    host_uuid: str
    pid: int

    @property
    def uri(self) -> str:
        """Local URI of this daemon (no SSH)."""
        return f"qemu+unix:///system?socket={self.socket}"

    def ssh_uri(
        self,
        sshd: Sshd,
        keyfile: Path,
        known_hosts: Path,
        user: str = "root",
        transport: str = "libssh2",
        command: Path | None = None,
    ) -> str:
        """URI reaching this daemon through ``sshd``, host key pinned by ``known_hosts``.

        ``transport="libssh2"`` (default) checks ``known_hosts`` itself. With
        ``transport="ssh"`` (OpenSSH), pass ``command`` = :func:`write_ssh_command_wrapper`
        or the host key is checked against ~/.ssh/known_hosts instead.
        ``proxy=netcat`` makes the remote side run ``nc -U <socket>``; without it
        (proxy=native) virt-ssh-helper would connect to the SYSTEM daemon.
        """
        params = [
            ("keyfile", str(keyfile)),
            ("known_hosts", str(known_hosts)),
            ("socket", str(self.socket)),
            ("proxy", "netcat"),
        ]
        if command is not None:
            params.append(("command", str(command)))
        query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in params)
        return f"qemu+{transport}://{user}@{sshd.host}:{sshd.port}/system?{query}"

    def host_path(self, path: str | Path) -> Path:
        """Where a path as this daemon sees it really is on the host.

        /var/lib/libvirt/images/x -> DIR/ns/lib/images/x; paths outside the private
        directories are the same on both sides.
        """
        path = Path(path)
        for private, name in _PRIVATE.items():
            try:
                rel = path.relative_to(private)
            except ValueError:
                continue
            return self.dir / "ns" / name / rel
        return path

    def serial_log_path(self, domain_name: str) -> Path:
        """Host path of /var/log/libvirt/qemu/NAME-serial.log as this daemon sees it."""
        return self.host_path(SYSTEM_SERIAL_DIR / f"{domain_name}-serial.log")

    def is_alive(self) -> bool:
        return _pid_alive(self.pid, "libvirtd")


def system_serial_log_path(domain_name: str) -> Path:
    """The serial log path used by guests of qemu:///system (and inside daemon 2)."""
    return SYSTEM_SERIAL_DIR / f"{domain_name}-serial.log"


def start_libvirtd2(dir: Path, kvm: str | None = None) -> Daemon2:
    """Start (or find running) the second libvirtd of ``dir`` (keep ``dir`` short).

    ``kvm`` forces what the daemon sees as /dev/kvm: "mask" (no KVM, as where the QEMU
    user cannot open it) or "open" (an openable KVM device); default: as libvirtd.sh.
    """
    dir = Path(dir)
    mask = {None: None, "mask": "1", "open": "open"}[kvm]
    _run_script(LIBVIRTD2_SCRIPT, "start", str(dir), timeout=90,
                env={"HVP_LIBVIRTD_MASK_KVM": mask} if mask else None)
    env = _read_env(dir / "env")
    return Daemon2(
        dir=Path(env["LIBVIRTD2_DIR"]),
        socket=Path(env["LIBVIRTD2_SOCKET"]),
        host_uuid=env["LIBVIRTD2_HOST_UUID"],
        pid=int(env["LIBVIRTD2_PID"]),
    )


def set_kvm(dir: Path, kind: str) -> None:
    """Swap the running daemon's /dev/kvm: "mask", "open" or "broken" (opens, is not KVM)."""
    _run_script(LIBVIRTD2_SCRIPT, "set-kvm", str(dir), kind, timeout=30)


def stop_libvirtd2(dir: Path) -> None:
    """Destroy its guests, stop the daemon and end every process it left (QEMU, virtlogd)."""
    _run_script(LIBVIRTD2_SCRIPT, "stop", str(dir), timeout=120)


def libvirtd2_answers(dir: Path) -> bool:
    """True when the second daemon of ``dir`` accepts connections."""
    proc = subprocess.run(["bash", str(LIBVIRTD2_SCRIPT), "status", str(dir)],
                          capture_output=True, timeout=30, check=False)
    return proc.returncode == 0


def kill_libvirtd2(dir: Path, timeout: float = 10) -> int:
    """SIGKILL the second libvirtd only (a crash: its QEMUs and virtlogd keep running).

    Returns the PID killed; waits until it is gone. Restart with :func:`start_libvirtd2`.
    """
    pid_file = Path(dir) / "libvirtd.pid"
    pid = int(pid_file.read_text().strip())
    if not _pid_alive(pid, "libvirtd"):
        raise RuntimeError(f"libvirtd pid {pid} from {pid_file} is not running")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid, "libvirtd"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"libvirtd pid {pid} still alive after SIGKILL")
        time.sleep(0.02)
    return pid


def _pid_alive(pid: int, name: str) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return comm == name and state != "Z"


def remove_dir(dir: Path) -> None:
    """Remove a cluster DIR after stop_* (its files may belong to libvirt-qemu)."""
    shutil.rmtree(dir, ignore_errors=True)
