"""Helpers for tests that run against the real libvirtd (qemu:///system, TCG guests)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
LIBVIRTD_SCRIPT = REPO_ROOT / "scripts" / "services" / "libvirtd.sh"
SYSTEM_URI = "qemu:///system"


def ensure_libvirtd() -> str:
    """Start virtlogd + libvirtd if needed (idempotent) and return the system URI."""
    proc = subprocess.run(
        ["bash", str(LIBVIRTD_SCRIPT), "start"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{LIBVIRTD_SCRIPT} start failed ({proc.returncode}): "
            f"{proc.stdout.strip()} {proc.stderr.strip()}"
        )
    return SYSTEM_URI


def wait_for_serial(path: Path, text: str, timeout: float, interval: float = 0.1) -> str:
    """Poll the file ``path`` until it contains ``text``; return its whole content.

    A missing file counts as empty (virtlogd creates it when the guest starts).
    Raises TimeoutError, with the last content seen, after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    content = ""
    while True:
        try:
            content = Path(path).read_text(errors="replace")
        except FileNotFoundError:
            content = ""
        if text in content:
            return content
        if time.monotonic() >= deadline:
            tail = content[-2000:]
            raise TimeoutError(f"{text!r} not in {path} after {timeout:.1f}s; last output:\n{tail}")
        time.sleep(interval)


@contextmanager
def served_panel(data_dir: Path, uri: str,
                 default_storage_path: str | None = None) -> Iterator[tuple[Any, Any]]:
    """A started Panel on ``uri`` served over real HTTP; yields (panel, admin client)."""
    from hypervisor_panel.panel import Panel
    from hypervisor_panel.web.app import create_app
    from hypervisor_panel.web.server import serve_in_thread
    from tests.conftest import ADMIN_PASSWORD
    from tests.support.client import Client

    panel = Panel(data_dir, local_uri=uri, default_storage_path=default_storage_path)
    panel.start(admin_password=ADMIN_PASSWORD)
    server, port = serve_in_thread(create_app(panel))
    try:
        yield panel, Client(f"http://127.0.0.1:{port}").login("admin", ADMIN_PASSWORD)
    finally:
        server.stop()
        panel.close()
