"""SSH into a guest to run a script: pinned host key, SFTP upload, streamed output.

The VM service builds a :class:`GuestEndpoint` (a 127.0.0.1 port forward or the VM's
address, the key the panel made for it, the guest's host key). :func:`wait_for_banner`
waits for its sshd, :func:`connect` logs in with the host key pinned, :class:`ScriptRun`
runs a script as root: uploaded over SFTP to a private directory with its environment
file, started in its own process group, its output handed on line by line as it arrives,
the group killed on timeout or stop, its files removed. Values never reach a shell
string: they travel in the environment file, each quoted with ``shlex.quote``.
"""

from __future__ import annotations

import re
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import paramiko

from .cluster.ssh import CONNECT_TIMEOUT, HostKey, HostKeyMismatch, load_private_key
from .errors import Invalid, PanelError, Unavailable

BOOT_TIMEOUT = 600.0
POLL = 0.2  # seconds between looks at the output, the clock and the stop flag
PARTIAL_FLUSH = 0.5  # a line without its newline is shown after this long
TERM_GRACE = 5.0
KILL_GRACE = 3.0
REMOTE_TMP = "/tmp"  # noqa: S108 - on the guest; a fresh 0700 dir is made by mkdir
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHEBANG_WORD = re.compile(r"^[A-Za-z0-9_./+-]+$")
# Exit 0 while a process of group {pgid} lives. Zombies do not count: where PID 1 does not
# reap, killed processes stay in the table as zombies, and "kill -0" would see them.
ALIVE = ("cat /proc/[0-9]*/stat 2>/dev/null | awk -v g={pgid} "
         "'{{ sub(/.*\\) /, \"\"); if ($3 == g && $1 != \"Z\") n++ }} END {{ exit n ? 0 : 1 }}'")
HOST_KEY_LINE = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa) ([A-Za-z0-9+/=]+)")


@dataclass(frozen=True)
class GuestEndpoint:
    """How to reach a guest's sshd, and the keys that prove who is who."""

    host: str
    port: int
    username: str
    private_key_path: str | Path  # the ed25519 key the panel made for the VM
    host_key: str  # the guest's pinned host key: "ssh-ed25519 AAAA..."

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    def pinned(self) -> HostKey:
        match = HOST_KEY_LINE.match(self.host_key.strip())
        if not match:
            raise Invalid(f"the pinned host key of {self.label} is not a key line "
                          "('ssh-ed25519 AAAA...')", code="bad_host_key")
        return HostKey(match.group(1), match.group(2))


def wait_for_banner(host: str, port: int, timeout: float = BOOT_TIMEOUT,
                    stop: threading.Event | None = None, interval: float = 1.0) -> str:
    """Wait until ``host:port`` sends an ``SSH-`` banner (the guest may still boot)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with socket.create_connection((host, port), timeout=3) as sock:
                sock.settimeout(5)
                banner = sock.recv(256).decode(errors="replace")
            if banner.startswith("SSH-"):
                return banner.strip()
            last = f"it answered {banner[:40]!r}"
        except OSError as exc:
            last = exc.strerror or str(exc) or type(exc).__name__
        if stop is not None and stop.is_set():
            raise Unavailable("stopped while waiting for SSH", code="stopped")
        if time.monotonic() + interval > deadline:
            raise Unavailable(f"SSH on {host}:{port} did not answer within {timeout:.0f} s "
                              f"({last})", code="guest_ssh_timeout")
        (stop or threading.Event()).wait(interval)


@contextmanager
def connect(endpoint: GuestEndpoint) -> Iterator[paramiko.SSHClient]:
    """A logged-in client; a host key other than the pinned one is refused (409). The
    client is closed on every failure too (a failed ``connect`` leaves paramiko's
    transport running, and the guest's sshd waiting for it)."""
    host, port, pinned = endpoint.host, endpoint.port, endpoint.pinned()
    try:
        pkey = load_private_key(Path(endpoint.private_key_path).read_text())
    except OSError as exc:
        raise Invalid(f"cannot read the guest key {endpoint.private_key_path}: "
                      f"{exc.strerror}", code="bad_private_key") from exc
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(host if port == 22 else f"[{host}]:{port}", pinned.key_type,
                               pinned.to_paramiko())
    try:
        try:
            client.connect(host, port=port, username=endpoint.username, pkey=pkey,
                           timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT,
                           auth_timeout=CONNECT_TIMEOUT, allow_agent=False,
                           look_for_keys=False)
        except paramiko.BadHostKeyException as exc:
            raise HostKeyMismatch(f"the SSH host key of {endpoint.label} is not the pinned "
                                  f"one (it is {HostKey.from_paramiko(exc.key).fingerprint}, "
                                  f"pinned {pinned.fingerprint}); refusing to connect") from exc
        except paramiko.AuthenticationException as exc:
            raise Invalid(f"SSH login as {endpoint.username!r} on {endpoint.label} failed: "
                          f"{exc}", code="ssh_auth_failed") from exc
        except (paramiko.SSHException, OSError) as exc:
            raise Unavailable(f"SSH to {endpoint.label} failed: {exc}",
                              code="ssh_unreachable") from exc
        yield client
    finally:
        client.close()


def env_file(env: Mapping[str, str]) -> str:
    """``export NAME='value'`` lines (``shlex.quote``), sourced before the script."""
    lines = []
    for name, value in env.items():
        if not ENV_NAME.match(name) or "\0" in value:
            raise Invalid(f"bad environment variable {name[:64]!r}", code="bad_recipe_params")
        lines.append(f"export {name}={shlex.quote(value)}\n")
    return "".join(lines)


def interpreter(script: str) -> list[str]:
    """The script's ``#!`` command (words of safe characters), else ``/bin/sh``.

    Running ``INTERPRETER SCRIPT`` rather than the file itself also works where the
    temporary directory is mounted noexec.
    """
    first = script.split("\n", 1)[0]
    if first.startswith("#!"):
        words = first[2:].split()
        if words and len(words) <= 3 and all(SHEBANG_WORD.match(w) for w in words):
            return words
    return ["/bin/sh"]


def run_on_guest(endpoint: GuestEndpoint, script: str, env: Mapping[str, str], *,
                 timeout: float, stop: threading.Event, on_line: Callable[[str], None],
                 boot_timeout: float = BOOT_TIMEOUT) -> Outcome:
    """Wait for the guest's SSH, log in, run ``script`` as root (see :class:`ScriptRun`)."""
    on_line(f"panel: waiting for SSH on {endpoint.label}")
    wait_for_banner(endpoint.host, endpoint.port, boot_timeout, stop)
    with connect(endpoint) as client:
        on_line("panel: SSH answers; running the recipe as root")
        return ScriptRun(client, endpoint.username, on_line).run(script, env, timeout, stop)


class ScriptFailed(PanelError):
    """A script exited non-zero, ran past its timeout or was killed."""

    status, code = 422, "recipe_failed"


@dataclass(frozen=True)
class Outcome:
    """How a script ended: its exit code, or why it has none."""

    exit_code: int | None
    timed_out: bool = False
    stopped: bool = False
    killed: bool = False  # the process group was gone after the kill

    def check(self, what: str, timeout: float) -> None:
        """Raise ScriptFailed unless the script exited 0 (or was stopped on request)."""
        if self.stopped or self.exit_code == 0:
            return
        if self.timed_out:
            gone = "killed" if self.killed else "signalled (not confirmed gone)"
            raise ScriptFailed(f"{what} ran longer than its timeout ({timeout:.0f} s); its "
                               f"processes were {gone}", code="recipe_timeout")
        if self.exit_code is None:
            raise ScriptFailed(f"{what} ended without an exit code (the connection dropped "
                               "or its shell was killed)")
        raise ScriptFailed(f"{what} exited with code {self.exit_code}",
                           details={"exit_code": self.exit_code})


class ScriptRun:
    """One script on a logged-in client (see the module docstring)."""

    def __init__(self, client: paramiko.SSHClient, username: str,
                 on_line: Callable[[str], None], workdir: str = REMOTE_TMP) -> None:
        self.client = client
        self.sudo = "" if username == "root" else "sudo -n "
        self.on_line = on_line
        self.workdir = workdir.rstrip("/") or "/"
        self.nonce = secrets.token_hex(8)
        self.dir = f"{self.workdir}/hvp-recipe-{secrets.token_hex(6)}"
        self.created = False
        self.pgid: int | None = None
        self.exit_code: int | None = None
        self.partial = b""

    def run(self, script: str, env: Mapping[str, str], timeout: float,
            stop: threading.Event) -> Outcome:
        """Upload, start, stream until the end, the timeout or ``stop``; clean up."""
        self._upload(script, env_file(env))
        try:
            channel = self._start(interpreter(script))
            try:
                return self._follow(channel, time.monotonic() + timeout, stop)
            finally:
                channel.close()
        finally:
            self._cleanup()

    # -- steps -------------------------------------------------------------------------
    def _upload(self, script: str, env_text: str) -> None:
        try:
            sftp = self.client.open_sftp()
        except (paramiko.SSHException, OSError) as exc:
            raise Unavailable(f"SFTP on the guest failed: {exc}", code="guest_sftp") from exc
        try:
            sftp.mkdir(self.dir, 0o700)  # fails if it exists: never follows a planted link
            self.created = True
            sftp.chmod(self.dir, 0o700)
            for name, data, mode in (("env", env_text, 0o600), ("script", script, 0o700)):
                path = f"{self.dir}/{name}"
                with sftp.open(path, "wb") as fh:
                    fh.chmod(mode)
                    fh.write(data.encode())
        except (OSError, paramiko.SSHException) as exc:
            self._cleanup()
            raise Unavailable(f"uploading the recipe to the guest failed: {exc}",
                              code="guest_sftp") from exc
        finally:
            sftp.close()

    def _start(self, interp: list[str]) -> paramiko.Channel:
        env, script = shlex.quote(f"{self.dir}/env"), shlex.quote(f"{self.dir}/script")
        command = " ".join(shlex.quote(word) for word in interp)
        inner = (f"exec 2>&1; echo hvp-pgid-{self.nonce}:$$; "
                 f". {env} && rm -f -- {env} && {command} {script} </dev/null; "
                 f"echo \"hvp-exit-{self.nonce}:$?\"")
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise Unavailable("the SSH connection to the guest closed", code="guest_ssh")
        channel = self._open(transport)
        channel.set_combine_stderr(True)
        channel.settimeout(POLL)
        channel.exec_command(f"{self.sudo}setsid sh -c {shlex.quote(inner)} </dev/null")
        return channel

    @staticmethod
    def _open(transport: paramiko.Transport) -> paramiko.Channel:
        """A session channel; retried (nothing runs yet): right after the SFTP upload,
        dropbear sometimes closes a new channel at once ("Unable to open channel")."""
        for attempt in range(3):
            try:
                return transport.open_session(timeout=15)
            except paramiko.SSHException:
                if attempt == 2 or not transport.is_active():
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def _follow(self, channel: paramiko.Channel, deadline: float,
                stop: threading.Event) -> Outcome:
        last_data = time.monotonic()
        while self.exit_code is None:
            if stop.is_set() or time.monotonic() > deadline:
                timed_out = not stop.is_set()
                killed = self._kill(channel, "timeout" if timed_out else "stop requested")
                return Outcome(None, timed_out=timed_out, stopped=not timed_out,
                               killed=killed)
            try:
                data = channel.recv(65536)
            except TimeoutError:
                if self.partial and time.monotonic() - last_data > PARTIAL_FLUSH:
                    self._emit(self.partial)
                    self.partial = b""
                continue
            if not data:
                return self._ended(channel)
            last_data = time.monotonic()
            self._lines(data)
        return Outcome(self.exit_code)

    def _ended(self, channel: paramiko.Channel) -> Outcome:
        """The output ended without the exit marker: the shell never started (setsid
        missing: its exit status tells) or was killed (no exit code)."""
        self._lines(b"\n" if self.partial else b"")
        if self.exit_code is not None or self.pgid is not None:
            return Outcome(self.exit_code)
        status = channel.recv_exit_status() if channel.exit_status_ready() else -1
        return Outcome(status if status >= 0 else None)

    def _lines(self, data: bytes) -> None:
        *complete, self.partial = (self.partial + data).split(b"\n")
        for raw in complete:
            if self.exit_code is None:
                self._emit(raw)

    def _emit(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        pgid_mark, exit_mark = f"hvp-pgid-{self.nonce}:", f"hvp-exit-{self.nonce}:"
        if self.pgid is None and line.startswith(pgid_mark):
            self.pgid = int(line[len(pgid_mark):])
            return
        head, sep, tail = line.rpartition(exit_mark)
        if sep and tail.isdigit():
            self.exit_code = int(tail)
            line = head
            if not line:
                return
        self.on_line(line)

    def _kill(self, channel: paramiko.Channel, why: str) -> bool:
        """TERM the process group, KILL it after a grace time; True when it is gone."""
        end = time.monotonic() + TERM_GRACE
        while self.pgid is None and time.monotonic() < end:  # stopped before it was read
            try:
                data = channel.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            self._lines(data)
        self.on_line(f"panel: {why}: killing process group {self.pgid or '(unknown)'}")
        if self.pgid is None:
            return False
        for signal, grace in (("TERM", TERM_GRACE), ("KILL", KILL_GRACE)):
            self.exec(f"kill -{signal} -{self.pgid}")  # dash's kill takes no "--"
            end = time.monotonic() + grace
            while time.monotonic() < end:
                self._drain(channel)
                if self.exec(ALIVE.format(pgid=self.pgid)) != 0:
                    return True
                time.sleep(0.1)
        return False

    def _drain(self, channel: paramiko.Channel) -> None:
        """Show what the script printed while it was being stopped."""
        with suppress(TimeoutError, OSError, paramiko.SSHException):
            while channel.recv_ready():
                self._lines(channel.recv(65536))

    def _cleanup(self) -> None:
        if self.created:
            with suppress(Exception):
                self.exec(f"rm -rf -- {shlex.quote(self.dir)}")

    def exec(self, command: str, timeout: float = 15.0) -> int:
        """Run a short fixed command as root; its exit status (-1: no connection)."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            return -1
        channel = transport.open_session(timeout=timeout)
        try:
            channel.settimeout(timeout)
            channel.exec_command(f"{self.sudo}sh -c {shlex.quote(command)} >/dev/null 2>&1")
            return channel.exit_status if channel.status_event.wait(timeout) else -1
        finally:
            channel.close()
