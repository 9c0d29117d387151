"""Shared fixtures: a panel on the project's own test-driver node, served over real HTTP."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor_panel.panel import Panel
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.server import serve_in_thread
from tests.support.client import Client

DATA = Path(__file__).parent / "data"
# The tests' direct-boot kernels live in the repository's cache and in /tmp: allow them
# next to the panel's boot folders (hypervisor_panel.paths.boot_dirs).
os.environ.setdefault("HVP_BOOT_DIRS", f"{Path(__file__).resolve().parents[1] / '.cache'}:/tmp")
_BEFORE = pytest.StashKey[dict]()
ADMIN_PASSWORD = "admin-password-for-tests"


def node_uri_for(tmp_path: Path) -> str:
    """A private copy of the test-driver node XML (the default test-driver URI shares state)."""
    copy = tmp_path / "test-node.xml"
    shutil.copyfile(DATA / "test-node.xml", copy)
    return f"test://{copy}"


@pytest.fixture
def panel(tmp_path: Path) -> Iterator[Panel]:
    p = Panel(tmp_path / "data", local_uri=node_uri_for(tmp_path),
              default_storage_path=str(tmp_path / "images"))
    p.start(admin_password=ADMIN_PASSWORD)
    yield p
    p.close()


@pytest.fixture
def server(panel: Panel) -> Iterator[str]:
    srv, port = serve_in_thread(create_app(panel))
    yield f"http://127.0.0.1:{port}"
    srv.stop()


@pytest.fixture
def anon(server: str) -> Client:
    return Client(server)


@pytest.fixture
def admin(anon: Client) -> Client:
    return anon.login("admin", ADMIN_PASSWORD)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[dict]:
    """A served panel with two test-driver nodes: "demo" (the local one) and "b".

    Node b is recorded and connected the way NodeJoiner adds a node after its SSH checks
    (those run against a real sshd in test_cluster_real.py).
    """
    uris = []
    for name in ("a", "b"):
        copy = tmp_path / f"{name}.xml"
        shutil.copyfile(DATA / "test-node.xml", copy)
        uris.append(f"test://{copy}")
    p = Panel(tmp_path / "data", local_uri=uris[0],
              default_storage_path=str(tmp_path / "images"))
    p.start(admin_password=ADMIN_PASSWORD)
    p.nodes.add({"id": "nodeb", "name": "b", "uri": uris[1], "kind": "demo",
                 "host": "127.0.0.1", "domain_type": "auto", "created": time.time()})
    srv, port = serve_in_thread(create_app(p))
    base = f"http://127.0.0.1:{port}"
    admin = Client(base).login("admin", ADMIN_PASSWORD)
    ids = {n["name"]: n["id"] for n in admin.get("/api/v1/nodes").body["items"]}
    yield {"panel": p, "server": base, "admin": admin, "ids": ids}
    srv.stop()
    p.close()


# -- the session leaves nothing behind --------------------------------------------------
def pytest_sessionstart(session: pytest.Session) -> None:
    from tests.support.leftovers import snapshot

    session.config.stash[_BEFORE] = snapshot()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when tests left domains, pools, daemons or folders behind."""
    from tests.support.leftovers import left_behind, snapshot

    before = session.config.stash.get(_BEFORE, None)
    if before is None or os.environ.get("HVP_SKIP_LEFTOVER_CHECK") == "1":
        return
    if getattr(session.config.option, "collectonly", False):
        return
    found = left_behind(before, snapshot())
    if not found:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["LEFTOVERS: the test session left these behind (tests must remove what "
             "they create):"]
    for kind, items in found.items():
        lines += [f"  {kind}:"] + [f"    {item}" for item in items]
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
