"""The ``nfs`` back end: libvirt ``netfs`` pool; qcow2 files; backing-file linked clones.

Every node mounts the same export at the same mount point (libvirt mounts it when the pool
starts), so a qcow2 overlay's absolute backing-file path is valid on every node and VMs
migrate without copying their disks.

Before libvirt tries to mount, ``prepare`` checks that the server answers: it resolves the
host name, opens a TCP connection to the NFS port and sends an ONC RPC ``NULL`` call for the
NFS program in the pool's major version (what ``rpcinfo -t HOST nfs 4`` does). A wrong host,
a closed port or a server without that NFS version thus gives a clear error within seconds
instead of a mount that hangs. The check runs on the panel's machine: for a local node that
is the node itself; for a remote node it is a best effort (the panel may reach a server the
node cannot, or the other way round).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any, ClassVar

import libvirt

from hypervisor_panel.storage import BackingFileClones, StorageBackend, StorageError
from hypervisor_panel.validation import check_host_path

#: Absolute path, no ``..`` component, no characters that mean something to mount or XML.
PATH_PATTERN = r"^/(?!.*(^|/)\.\.(/|$))[A-Za-z0-9._/+-]*$"
#: A DNS name or an IPv4 address (RFC 1123 labels): no shell, XML or mount metacharacters.
HOST_PATTERN = (r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
VERSIONS = ("3", "4", "4.1", "4.2")
NFS_PORT = 2049
DEFAULT_MOUNT_ROOT = "/var/lib/libvirt/images"
#: libvirt's namespace for extra mount options of fs/netfs pools (``-o`` of mount).
FS_NS = "http://libvirt.org/schemas/storagepool/fs/1.0"
ET.register_namespace("fs", FS_NS)

#: Seconds for each step of the reachability check (resolve, connect, RPC answer).
CHECK_TIMEOUT = 3.0

NFS_PROGRAM = 100003
RPC_CALL, RPC_REPLY = 0, 1
MSG_ACCEPTED = 0
ACCEPT_SUCCESS, PROG_UNAVAIL, PROG_MISMATCH = 0, 1, 2


class NFSStorage(BackingFileClones, StorageBackend):
    """An NFS export mounted by libvirt on every node (shared: migrations keep the disks)."""

    name: ClassVar[str] = "nfs"
    description: ClassVar[str] = ("NFS export mounted on every node (qcow2 files, linked "
                                  "clones, shared between nodes)")
    shared: ClassVar[bool] = True
    #: ``build`` creates the mount point; libvirt mounts the export when the pool starts.
    build_flags: ClassVar[int | None] = 0
    options_schema: ClassVar[dict] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["host", "export"],
        "properties": {
            "host": {
                "type": "string",
                "title": "NFS server",
                "description": "Host name or IPv4 address of the NFS server",
                "pattern": HOST_PATTERN,
                "minLength": 1,
                "maxLength": 253,
            },
            "export": {
                "type": "string",
                "title": "Export",
                "description": "Absolute path of the export on the server (for NFSv4, "
                               "the path in the server's pseudo file system)",
                "pattern": PATH_PATTERN,
                "minLength": 1,
                "maxLength": 255,
            },
            "version": {
                "type": "string",
                "title": "NFS version",
                "enum": list(VERSIONS),
                "default": "4",
            },
            "port": {
                "type": "integer",
                "title": "Port",
                "description": f"NFS server port (default {NFS_PORT})",
                "minimum": 1,
                "maximum": 65535,
            },
            "mount_point": {
                "type": "string",
                "title": "Mount point",
                "description": "Absolute path on every node where the export is mounted; "
                               f"default {DEFAULT_MOUNT_ROOT}/hvp-nfs-<storage name>",
                "pattern": PATH_PATTERN,
                "minLength": 2,
                "maxLength": 255,
            },
        },
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """A mount point must not be a system folder: mounting the export over /etc or
        /var/lib/libvirt/qemu would hide the node's own files (the default, under
        /var/lib/libvirt/images, is fine). The export is a path on the server: not checked."""
        if "mount_point" in options:
            check_host_path(options["mount_point"], "an NFS mount point")

    # -- pure parts ------------------------------------------------------------------
    @property
    def folder(self) -> str | None:
        return self.mount_point

    @property
    def mount_point(self) -> str:
        return (self.options.get("mount_point")
                or f"{DEFAULT_MOUNT_ROOT}/hvp-nfs-{self.storage['name']}")

    @property
    def port(self) -> int:
        return int(self.options.get("port") or NFS_PORT)

    @property
    def version(self) -> str:
        return str(self.options.get("version") or "4")

    def pool_xml(self) -> str:
        pool = ET.Element("pool", type="netfs")
        ET.SubElement(pool, "name").text = self.pool_name
        source = ET.SubElement(pool, "source")
        ET.SubElement(source, "host", name=self.options["host"])
        ET.SubElement(source, "dir", path=self.options["export"])
        ET.SubElement(source, "format", type="nfs")
        # libvirt 9.0 passes it to mount as ``nfsvers=VER`` (minor versions included).
        ET.SubElement(source, "protocol", ver=self.version)
        target = ET.SubElement(pool, "target")
        ET.SubElement(target, "path").text = self.mount_point
        if self.options.get("port"):
            # libvirt ignores <host port=...> for netfs mounts: pass mount's port= option.
            opts = ET.SubElement(pool, f"{{{FS_NS}}}mount_opts")
            ET.SubElement(opts, f"{{{FS_NS}}}option", name=f"port={self.port}")
        return ET.tostring(pool, encoding="unicode")

    # -- side effects ----------------------------------------------------------------
    def prepare(self, conn: libvirt.virConnect) -> None:
        """Refuse to define or start the pool when the NFS server does not answer."""
        check_nfs_server(self.options["host"], self.port, self.version)


# -- the reachability check ------------------------------------------------------------
def check_nfs_server(host: str, port: int = NFS_PORT, version: str = "4",
                     timeout: float = CHECK_TIMEOUT) -> None:
    """Raise StorageError unless ``host:port`` answers an RPC NULL call for NFS ``version``.

    Each step (name resolution, TCP connect, RPC answer) is bounded by ``timeout`` seconds.
    """
    addresses = _resolve(host, port, timeout)
    sock = _connect(host, port, addresses, timeout)
    major = int(version.split(".")[0])
    with sock:
        try:
            sock.settimeout(timeout)
            xid = int.from_bytes(os.urandom(4), "big")
            sock.sendall(_null_call(xid, major))
            reply = _read_record(sock)
        except (OSError, ValueError) as exc:
            raise StorageError(
                f"{host}:{port} accepts connections but is not an NFS server "
                f"(no answer to an NFSv{major} NULL call: {_reason(exc)})",
                code="nfs_not_nfs") from exc
    _check_reply(reply, xid, host, port, major)


def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """getaddrinfo with a deadline (the resolver's own timeouts can add up to minutes)."""
    result: dict[str, Any] = {}

    def lookup() -> None:
        try:
            result["addrs"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            result["error"] = exc

    worker = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise StorageError(f"cannot resolve host {host!r}: no answer from DNS in "
                           f"{timeout:g} s", code="nfs_host_unknown")
    if "error" in result:
        raise StorageError(f"cannot resolve host {host!r}: {_reason(result['error'])}",
                           code="nfs_host_unknown")
    if not result.get("addrs"):
        raise StorageError(f"cannot resolve host {host!r}: no address", code="nfs_host_unknown")
    return result["addrs"]


def _connect(host: str, port: int, addresses: list[tuple], timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    for family, kind, proto, _name, address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, kind, proto)
        sock.settimeout(remaining)
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            last = exc
            sock.close()
    why = _reason(last) if last else f"timed out after {timeout:g} s"
    raise StorageError(f"NFS server {host}:{port} does not answer ({why})",
                       code="nfs_unreachable")


def _null_call(xid: int, version: int) -> bytes:
    """An ONC RPC (RFC 5531) NULL call to the NFS program, with a TCP record mark."""
    body = struct.pack(">IIIIII", xid, RPC_CALL, 2, NFS_PROGRAM, version, 0)
    body += struct.pack(">IIII", 0, 0, 0, 0)  # AUTH_NONE credential and verifier
    return struct.pack(">I", 0x80000000 | len(body)) + body


def _read_record(sock: socket.socket) -> bytes:
    data = b""
    last = False
    while not last:
        (mark,) = struct.unpack(">I", _read_exact(sock, 4))
        last, size = bool(mark & 0x80000000), mark & 0x7FFFFFFF
        if size > 65536:
            raise ValueError("oversized RPC record")
        data += _read_exact(sock, size)
    return data


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError("connection closed")
        data += chunk
    return data


def _check_reply(reply: bytes, xid: int, host: str, port: int, major: int) -> None:
    where = f"{host}:{port}"
    try:
        rxid, mtype, rstat = struct.unpack_from(">III", reply, 0)
        if rxid != xid or mtype != RPC_REPLY:
            raise ValueError("not an RPC reply")
        if rstat != MSG_ACCEPTED:
            raise StorageError(f"NFS server {where} refused an NFSv{major} NULL call",
                               code="nfs_refused")
        (verf_len,) = struct.unpack_from(">I", reply, 16)
        offset = 20 + (verf_len + 3) // 4 * 4
        (accept,) = struct.unpack_from(">I", reply, offset)
        if accept == PROG_MISMATCH:
            low, high = struct.unpack_from(">II", reply, offset + 4)
            offered = f"NFSv{low}" if low == high else f"NFSv{low} to NFSv{high}"
            raise StorageError(f"NFS server {where} does not offer NFSv{major} "
                               f"(it offers {offered})", code="nfs_version_unsupported")
        if accept == PROG_UNAVAIL:
            raise StorageError(f"{where} speaks RPC but offers no NFS service",
                               code="nfs_not_nfs")
        if accept != ACCEPT_SUCCESS:
            raise ValueError(f"RPC accept status {accept}")
    except (struct.error, ValueError) as exc:
        raise StorageError(f"{where} answered but not as an NFS server ({exc})",
                           code="nfs_not_nfs") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
