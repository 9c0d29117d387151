"""A real userspace NFS server (nfs-ganesha, NFSv4 only) and libnfs clients for the tests.

``start_ganesha(dir)`` runs ``scripts/services/nfs-ganesha.sh start DIR`` (idempotent: a
server already running in ``dir`` is reused) and returns how to reach it; ``stop_ganesha``
stops it by PID. ``nfs_url``/``nfs_ls``/``nfs_cp`` drive libnfs-utils, the userspace NFS
client (this kernel has no NFS client, so nothing can be mounted). The Debian packages
(nfs-ganesha nfs-ganesha-vfs libnfs-utils) are not installed here.

Known limit of Debian 12's libnfs-utils 4.0: an NFSv4 WRITE of more than ~3 KB fails in the
client ("ZDR error: Failed to encode COMPOUND4args"); reads of any size work. Tests write
small qcow2 images (512-byte clusters) through NFS and read large ones back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GANESHA_SCRIPT = REPO_ROOT / "scripts" / "services" / "nfs-ganesha.sh"
DEBS = "nfs-ganesha nfs-ganesha-vfs libnfs-utils"
#: Largest write that Debian 12's libnfs 4.0 client manages over NFSv4 (see module doc).
LIBNFS_V4_MAX_WRITE = 3000


@dataclass(frozen=True)
class NFSServer:
    """A running ganesha: clients use ``host:port`` and the pseudo path ``export``."""

    dir: Path
    host: str
    port: int
    export: str
    export_dir: Path
    pid: int

    def url(self, path: str = "") -> str:
        return nfs_url(self.host, self.port, f"{self.export}/{path}".rstrip("/"))


def ganesha_missing() -> str | None:
    """Why the real server cannot run here, or None when it can."""
    for binary, package in (("ganesha.nfsd", "nfs-ganesha nfs-ganesha-vfs"),
                            ("nfs-ls", "libnfs-utils"), ("nfs-cp", "libnfs-utils")):
        if not shutil.which(binary):
            return f"{binary} not found (Debian packages: {package})"
    if not Path("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so").exists() and not any(
            Path("/usr/lib").glob("*/ganesha/libfsalvfs.so")):
        return "ganesha's VFS FSAL is missing (Debian package: nfs-ganesha-vfs)"
    return None


def _run(command: str, dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(GANESHA_SCRIPT), command, str(dir)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _parse_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            values[key] = value
    return values


def start_ganesha(dir: Path, timeout: float = 60) -> NFSServer:
    """Start (or reuse) the server in ``dir``; RuntimeError with the script's output."""
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    proc = _run("start", dir, timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{GANESHA_SCRIPT} start {dir} failed ({proc.returncode}); "
                           f"log in {dir / 'ganesha.log'}:\n{proc.stdout}\n{proc.stderr}")
    env = _parse_env(dir / "env")
    return NFSServer(dir=dir, host=env["NFS_HOST"], port=int(env["NFS_PORT"]),
                     export=env["NFS_EXPORT"], export_dir=Path(env["NFS_EXPORT_DIR"]),
                     pid=int(env["NFS_PID"]))


def stop_ganesha(dir: Path, timeout: float = 30) -> None:
    proc = _run("stop", Path(dir).resolve(), timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{GANESHA_SCRIPT} stop {dir} failed:\n{proc.stdout}\n{proc.stderr}")


def ganesha_running(dir: Path) -> bool:
    return _run("status", Path(dir).resolve(), 30).returncode == 0


# -- libnfs-utils ----------------------------------------------------------------------
def nfs_url(host: str, port: int, path: str) -> str:
    """A libnfs URL for NFSv4 on ``port`` (no portmapper needed)."""
    return f"nfs://{host}{path}?version=4&nfsport={port}"


def _libnfs(*args: str, timeout: float = 30) -> str:
    proc = subprocess.run(list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)
    # nfs-cp prints "Failed to write ..." yet may exit 0: judge by stderr as well.
    if proc.returncode != 0 or "Failed" in proc.stderr or "error" in proc.stderr.lower():
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def nfs_ls(url: str) -> list[str]:
    """Names in an NFS directory (``nfs-ls``), without . and .."""
    names = []
    for line in _libnfs("nfs-ls", url).splitlines():
        name = line.split()[-1] if line.split() else ""
        if name and name not in (".", ".."):
            names.append(name)
    return sorted(names)


def nfs_cp(source: str | Path, dest: str | Path) -> None:
    """Copy a file to or from NFS (``nfs-cp``; one side is an nfs:// URL)."""
    _libnfs("nfs-cp", str(source), str(dest))


# -- a port where nothing listens, and a listener that is not NFS ----------------------
def closed_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def silent_listener() -> Iterator[int]:
    """A TCP listener that accepts connections and closes them without a word."""
    import threading

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _addr = server.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, name="silent listener", daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        server.close()
