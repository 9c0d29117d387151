"""A real single-node Ceph cluster (memstore OSD, cephx) for the RBD storage tests.

``start_ceph(dir)`` runs ``scripts/services/ceph.sh start DIR`` (idempotent: a
cluster already running in ``dir`` is reused) and returns what a test needs to
reach it; ``stop_ceph(dir)`` stops its daemons by PID. The Debian packages
(ceph-mon ceph-osd ceph-mgr ceph-common python3-rbd python3-rados
libvirt-daemon-driver-storage-rbd qemu-block-extra) are installed by the Makefile.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CEPH_SCRIPT = REPO_ROOT / "scripts" / "services" / "ceph.sh"
LIBVIRT_USER = "libvirt"
RBD_POOL = "rbd"


@dataclass(frozen=True)
class CephCluster:
    """How to reach a running test cluster.

    ``mon_port`` is the monitor's msgr v1 port (the one to give libvirt's
    ``<host name='127.0.0.1' port='...'/>``, QEMU's ``rbd:`` and librados as a
    bare ``host:port``); ``mon_port_v2`` its msgr2 port. ``libvirt_key`` is the
    base64 cephx key of ``client.libvirt`` (a libvirt secret takes the decoded
    bytes: ``secret.setValue(base64.b64decode(key))``).
    """

    dir: Path
    conf: Path
    mon_host: str
    mon_port: int
    fsid: str
    admin_keyring: Path
    libvirt_user: str = LIBVIRT_USER
    libvirt_key: str = ""
    mon_port_v2: int = 0
    pool: str = RBD_POOL

    @property
    def mon_addr(self) -> str:
        """``host:port`` of the monitor's v1 address."""
        return f"{self.mon_host}:{self.mon_port}"

    def rbd_spec(self, image: str, user: str = "admin") -> str:
        """A ``qemu-img`` target for ``image`` in the rbd pool, e.g. ``rbd:rbd/img:...``."""
        keyring = (
            self.admin_keyring if user == "admin" else self.dir / f"ceph.client.{user}.keyring"
        )
        return f"rbd:{self.pool}/{image}:id={user}:conf={self.conf}:keyring={keyring}"

    def env(self) -> dict[str, str]:
        """Environment variables that point ceph/rbd CLIs at this cluster."""
        return {"CEPH_CONF": str(self.conf), "CEPH_KEYRING": str(self.admin_keyring)}


def parse_env(path: Path) -> dict[str, str]:
    """Read the shell-style ``KEY=value`` lines that ceph.sh writes to DIR/env."""
    values: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        words = shlex.split(raw)
        values[key.strip()] = words[0] if words else ""
    return values


def _run(command: str, dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", str(CEPH_SCRIPT), command, str(dir)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc


def cluster_from_env(dir: Path) -> CephCluster:
    """The CephCluster described by ``dir/env`` (no check that it runs)."""
    dir = Path(dir).resolve()
    env = parse_env(dir / "env")
    return CephCluster(
        dir=dir,
        conf=Path(env["CEPH_CONF"]),
        mon_host=env["CEPH_MON_HOST"],
        mon_port=int(env["CEPH_MON_PORT"]),
        fsid=env["CEPH_FSID"],
        admin_keyring=Path(env["CEPH_ADMIN_KEYRING"]),
        libvirt_user=LIBVIRT_USER,
        libvirt_key=env["CEPH_LIBVIRT_KEY"],
        mon_port_v2=int(env.get("CEPH_MON_PORT_V2") or 0),
    )


def start_ceph(dir: Path, timeout: float = 120) -> CephCluster:
    """Start (or reuse) the cluster in ``dir`` and describe it.

    Raises RuntimeError with the script's output (and where its logs are) when
    the cluster does not come up; no daemon is left running then.
    """
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    proc = _run("start", dir, timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{CEPH_SCRIPT} start {dir} failed ({proc.returncode}); logs in {dir / 'log'}:\n"
            f"{proc.stdout.strip()}\n{proc.stderr.strip()}"
        )
    return cluster_from_env(dir)


def stop_ceph(dir: Path, timeout: float = 90) -> None:
    """Stop the daemons of the cluster in ``dir`` (idempotent)."""
    proc = _run("stop", Path(dir).resolve(), timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{CEPH_SCRIPT} stop {dir} failed ({proc.returncode}):\n"
            f"{proc.stdout.strip()}\n{proc.stderr.strip()}"
        )


def ceph_running(dir: Path, timeout: float = 30) -> bool:
    """True when the cluster in ``dir`` answers (``ceph.sh status``)."""
    return _run("status", Path(dir).resolve(), timeout).returncode == 0
