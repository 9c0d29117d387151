"""A node as capability plugins see it: its libvirt connection and fixed commands.

Commands are argument lists: run with ``subprocess`` on the panel's own machine, over the
node's pinned SSH connection otherwise (``cluster/ssh.py`` quotes every argument), never
through a shell built from input.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import paramiko

from ..cluster import ssh
from ..errors import NodeCommandError, PanelError
from .records import NodeRecord

COMMAND_TIMEOUT = 60.0


@contextlib.contextmanager
def node_session(node: NodeRecord) -> Iterator[paramiko.SSHClient]:
    """A paramiko session to an SSH node with its pinned host key and the panel's key."""
    key_type, blob = node["host_key"].split()[:2]
    pkey = ssh.load_private_key(Path(node["keyfile"]).read_text())
    with ssh.session(node["host"], node["port"], node["username"],
                     ssh.HostKey(key_type, blob), pkey=pkey) as client:
        yield client


@dataclass
class NodeHandle:
    """Implements the contracts' ``NodeContext`` for one node."""

    node_id: str
    name: str
    local: bool
    record: NodeRecord
    _conn: Callable[[], libvirt.virConnect]
    demo: bool = False

    @property
    def conn(self) -> libvirt.virConnect:
        return self._conn()

    def run(self, argv: list[str], check: bool = True) -> str:
        """Run ``argv`` on the node; its output, or NodeCommandError when it fails and ``check``.

        The demo node runs nothing (it is the panel's own machine, not a host to change):
        every command "succeeds" with no output.
        """
        if self.demo:
            return ""
        if self.local:
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                                      timeout=COMMAND_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise NodeCommandError(f"node {self.name}: {argv[0]} failed: {exc}") from exc
            if proc.returncode != 0 and check:
                raise NodeCommandError(f"node {self.name}: {' '.join(argv[:3])} failed: "
                                   f"{(proc.stderr or proc.stdout).strip()[:300]}")
            return proc.stdout
        return self._run_ssh(argv, check)

    def _run_ssh(self, argv: list[str], check: bool) -> str:
        with node_session(self.record) as client:
            try:
                return ssh.run(client, argv, timeout=COMMAND_TIMEOUT)
            except PanelError as exc:
                if check:
                    raise NodeCommandError(f"node {self.name}: {exc.message}") from exc
                return ""
