"""Adding a node: confirm its host key, log in, check it fits, then reach its libvirt.

Nothing is kept unless every step passed: no half-added node. A password is used only to
install the panel's own key and is never stored; a given private key is kept in a file
readable by root only and never returned by the API.
"""

from __future__ import annotations

import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import libvirt

from ..cluster import checks, ssh
from ..cluster.keys import panel_key, write_secret_file
from ..errors import Conflict, Invalid
from ..events import EventLog
from ..tasks import TaskContext, TaskManager
from ..validation import NAME
from ..virt.errors import libvirt_message
from ..virt.facts import libvirt_facts
from .manager import NodeManager
from .records import NodeRecord

HOST_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$|^[0-9a-fA-F:]{2,39}$"
FINGERPRINT = {"type": "string", "pattern": r"^SHA256:[A-Za-z0-9+/]{43}$",
               "description": "the SHA256 fingerprint you confirmed (from /nodes/host-key)"}
HOST_KEY_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["host"],
    "properties": {"host": {"type": "string", "pattern": HOST_PATTERN},
                   "port": {"type": "integer", "minimum": 1, "maximum": 65535}},
}
CREATE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "host", "host_key_fingerprint"],
    "properties": {
        "name": NAME,
        "host": {"type": "string", "pattern": HOST_PATTERN},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 22},
        "username": {"type": "string", "pattern": r"^[a-z_][a-z0-9_-]{0,31}$",
                     "default": "root"},
        "ssh_private_key": {"type": "string", "maxLength": 16384, "writeOnly": True},
        "password": {"type": "string", "maxLength": 1024, "writeOnly": True,
                     "description": "used once to install the panel's key, never stored"},
        "host_key_fingerprint": FINGERPRINT,
        "libvirt_socket": {"type": "string", "pattern": r"^/[A-Za-z0-9._/-]{1,200}$",
                           "description": "libvirtd socket on the node, if not the default"},
        "migration_host": {"type": "string", "pattern": HOST_PATTERN,
                           "description": "address other nodes use for migration "
                                          "(default: host)"},
    },
    "oneOf": [{"required": ["ssh_private_key"]}, {"required": ["password"]}],
}


def libvirt_uri(node: dict[str, Any]) -> str:
    """libvirt's own SSH transport, with the panel's key and the pinned host key.

    ``qemu+libssh2`` checks ``known_hosts`` itself (the OpenSSH-based ``qemu+ssh`` ignores
    that parameter and would read ~/.ssh/known_hosts); an unknown or changed key is
    refused. A custom libvirt socket on the node is reached with ``nc -U`` (proxy=netcat).
    """
    params = {"keyfile": node["keyfile"], "known_hosts": node["known_hosts"],
              "sshauth": "privkey"}
    if node.get("libvirt_socket"):
        params["socket"] = node["libvirt_socket"]
        params["proxy"] = "netcat"
    host = f"[{node['host']}]" if ":" in node["host"] else node["host"]
    query = urllib.parse.urlencode(params, safe="/")
    return f"qemu+libssh2://{node['username']}@{host}:{node['port']}/system?{query}"


class NodeJoiner:
    """Runs the node-add flow as a task (request bodies validated by the router)."""

    def __init__(self, nodes: NodeManager, tasks: TaskManager, events: EventLog,
                 data_dir: Path) -> None:
        self.nodes = nodes
        self.tasks = tasks
        self.events = events
        self.ssh_dir = data_dir / "ssh"

    def host_key(self, data: dict[str, Any]) -> dict[str, Any]:
        key = ssh.fetch_host_key(data["host"], data.get("port", 22))
        return {"host": data["host"], "port": data.get("port", 22), "key_type": key.key_type,
                "fingerprint": key.fingerprint, "public_key": key.line}

    def submit(self, data: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        data = {"port": 22, "username": "root", **data}
        if self.nodes.find(name=data["name"]):
            raise Conflict(f"node {data['name']!r} already exists", code="already_exists")
        if self.nodes.find(host=data["host"], port=data["port"]):
            raise Conflict(f"{data['host']}:{data['port']} is already a node of this "
                           "cluster", code="node_exists")
        if "ssh_private_key" in data:
            ssh.load_private_key(data["ssh_private_key"])  # fail now on a bad key
        return self.tasks.submit(
            "node.add", lambda ctx: self._join(ctx, data, user["id"]),
            title=f"Add node {data['name']}",
            owner=user["id"], lock_key=f"node-add:{data['host']}:{data['port']}")

    def _join(self, ctx: TaskContext, data: dict[str, Any], actor: str) -> dict[str, Any]:
        node_id = uuid.uuid4().hex[:12]
        host, port = data["host"], data["port"]
        written: list[Path] = []
        added = False
        try:
            ctx.progress(5, f"reading the host key of {host}:{port}")
            seen = ssh.fetch_host_key(host, port)
            if seen.fingerprint != data["host_key_fingerprint"]:
                raise Invalid(f"the host key of {host}:{port} is {seen.fingerprint}, not the "
                              f"confirmed {data['host_key_fingerprint']}",
                              code="host_key_mismatch")
            keyfile, pkey_text = self._login_key(ctx, data, node_id, seen, written)
            ctx.progress(30, "checking the node over SSH")
            with ssh.session(host, port, data["username"], seen,
                             pkey=ssh.load_private_key(pkey_text)) as client:
                facts = checks.ssh_facts(client)
            known_hosts = self.ssh_dir / f"known_hosts-{node_id}"
            write_secret_file(known_hosts, seen.known_hosts_line(host, port))
            written.append(known_hosts)
            node = self._record(data, node_id, seen, keyfile, known_hosts)
            node["facts"] = self._check_libvirt(ctx, node, facts)
            ctx.progress(80, "defining the cluster's storages on the node")
            self.nodes.add(node)
            added = True
            self.events.emit("node.add", node_id, actor=actor, name=node["name"])
            return {"node": node_id}
        except Exception:
            if added:  # no half-added node: its record goes with its key files
                self.nodes.forget(node_id)
            for path in written:
                path.unlink(missing_ok=True)
            raise

    def _login_key(self, ctx: TaskContext, data: dict[str, Any], node_id: str,
                   seen: ssh.HostKey, written: list[Path]) -> tuple[Path, str]:
        """(key file, private key) the panel logs in with: the given key, or the panel's
        own key installed once with the password (which is never stored)."""
        if "password" in data:
            keyfile, public_line = panel_key(self.ssh_dir)
            ctx.progress(15, "installing the panel's SSH key with the password")
            with ssh.session(data["host"], data["port"], data["username"], seen,
                             password=data["password"]) as client:
                ssh.install_key(client, public_line)
            return keyfile, keyfile.read_text()
        keyfile = self.ssh_dir / f"node-{node_id}.key"
        write_secret_file(keyfile, data["ssh_private_key"])
        written.append(keyfile)
        return keyfile, data["ssh_private_key"]

    @staticmethod
    def _record(data: dict[str, Any], node_id: str, seen: ssh.HostKey, keyfile: Path,
                known_hosts: Path) -> NodeRecord:
        node: NodeRecord = {
            "id": node_id, "name": data["name"], "kind": "ssh", "host": data["host"],
            "port": data["port"], "username": data["username"], "keyfile": str(keyfile),
            "known_hosts": str(known_hosts), "host_key": seen.line,
            "host_key_fingerprint": seen.fingerprint,
            "libvirt_socket": data.get("libvirt_socket"),
            "migration_host": data.get("migration_host", data["host"]),
            "domain_type": "auto", "kvm_usable": None, "maintenance": False,
            "created": time.time(),
        }
        node["uri"] = libvirt_uri(node)
        return node

    def _check_libvirt(self, ctx: TaskContext, node: NodeRecord, facts: dict[str, Any]
                       ) -> dict[str, Any]:
        """Reach the node's libvirt over SSH; its facts must match the cluster's."""
        ctx.progress(50, "connecting to libvirt over SSH")
        try:
            conn = libvirt.open(node["uri"])
        except libvirt.libvirtError as exc:
            raise Invalid(f"libvirt on {node['host']} is not reachable over SSH: "
                          f"{libvirt_message(exc)}", code="libvirt_unreachable") from exc
        try:
            facts.update(libvirt_facts(conn))
        finally:
            conn.close()
        ctx.log(f"{facts['os_name']}, libvirt {facts['libvirt_version']}, QEMU "
                f"{facts['hypervisor_version']}, {facts['cpus']} CPUs, "
                f"{facts['memory_mib']} MiB")
        problems = checks.compatibility_problems(facts, self.nodes.member_facts())
        if problems:
            raise Invalid("the node does not match the cluster: " + "; ".join(problems),
                          code="node_incompatible", details=problems)
        return facts
