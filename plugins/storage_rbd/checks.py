"""Fast, clear checks of a Ceph cluster before libvirt is asked to use it.

libvirt's rbd pool reports a wrong key and an unreachable monitor alike ("failed to connect
to the RADOS monitor ...: No such file or directory") and only after its mount timeout.
These checks tell them apart within seconds. They run from the panel's machine, so for a
remote node they are a best effort; libvirt's own timeouts (``config_opts``) stay short too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypervisor_panel.storage import StorageError

CONNECT_TIMEOUT = 5


def decode_key(key: str) -> bytes:
    """The raw cephx key bytes (libvirt secrets hold the decoded key).

    A cephx key is a serialised CryptoKey: type (u16, 1 = AES), creation time (8 bytes),
    secret length (u16) and the secret; anything else is a typo, refused here.
    """
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StorageError("the Ceph key is not valid base64", code="ceph_bad_key") from exc
    if len(raw) < 12:
        raise StorageError("the Ceph key is too short to be a cephx key", code="ceph_bad_key")
    key_type, secret_len = struct.unpack_from("<H", raw, 0)[0], struct.unpack_from(
        "<H", raw, 10)[0]
    if key_type != 1 or secret_len != len(raw) - 12:
        raise StorageError("this is not a cephx key (as printed by 'ceph auth get-key')",
                           code="ceph_bad_key")
    return raw


def check_monitors(monitors: list[tuple[str, int]], timeout: float = 3.0) -> None:
    """At least one monitor must accept a TCP connection."""
    errors = []
    for host, port in monitors:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            errors.append(f"{host}:{port} ({exc.strerror or exc})")
    raise StorageError(f"no Ceph monitor answers: {', '.join(errors)}",
                       code="ceph_unreachable")


@contextlib.contextmanager
def cluster_session(monitors: list[tuple[str, int]], user: str,
                    key: str | None) -> Iterator[Any]:
    """A connected ``rados.Rados`` handle (python3-rados from Debian), shut down on exit."""
    import rados  # Debian's python3-rados (the venv sees system site-packages)

    mon_host = ",".join(f"v1:{host}:{port}" for host, port in monitors)
    with tempfile.TemporaryDirectory(prefix="hvp-ceph-") as tmp:
        conf = {"mon_host": mon_host, "client_mount_timeout": str(CONNECT_TIMEOUT),
                "rados_mon_op_timeout": str(CONNECT_TIMEOUT), "log_to_stderr": "false",
                "log_file": "/dev/null"}
        if key:
            keyring = Path(tmp) / "keyring"
            keyring.write_text(f"[client.{user}]\n\tkey = {key}\n")
            keyring.chmod(0o600)
            conf["keyring"] = str(keyring)
        else:
            conf["auth_client_required"] = "none"
        # An empty conf file of our own, so no /etc/ceph/ceph.conf of the panel host leaks in.
        conffile = Path(tmp) / "ceph.conf"
        conffile.write_text("[global]\n")
        cluster = rados.Rados(rados_id=user, conffile=str(conffile), conf=conf)
        try:
            cluster.connect(timeout=CONNECT_TIMEOUT)
        except rados.PermissionDeniedError as exc:
            raise StorageError(f"Ceph refused client.{user}: wrong key or unknown user",
                               code="ceph_auth_failed") from exc
        except (rados.TimedOut, rados.Error) as exc:
            raise StorageError(f"cannot log in to the Ceph cluster as client.{user}: {exc}",
                               code="ceph_unreachable") from exc
        try:
            yield cluster
        finally:
            cluster.shutdown()


def rados_available() -> bool:
    try:
        import rados  # noqa: F401
    except ImportError:
        return False
    return True


def check_cluster(monitors: list[tuple[str, int]], user: str, key: str | None,
                  pool: str) -> None:
    """Log in with the key and look the RBD pool up (when python3-rados is installed)."""
    check_monitors(monitors)
    if not rados_available():
        return
    with cluster_session(monitors, user, key) as cluster:
        if not cluster.pool_exists(pool):
            raise StorageError(f"the Ceph cluster has no pool {pool!r}",
                               code="ceph_pool_not_found")
