"""A normal (non-editable) install works: build the wheel, install it into a fresh venv and
start the installed ``hypervisor-panel`` console script from outside the repository.

* The wheel is built from a copy of the working tree, for two reasons: an in-tree build
  writes ``build/`` and ``*.egg-info`` into a tree other people are editing, and setuptools'
  ``build/lib`` keeps files of earlier builds (a deleted module would still ship). The copy
  also gets a probe plugin (a plugin folder with a subpackage and a data file) to show that
  a new folder in ``plugins/`` is packaged and registered without editing any list.
* The venv is fresh each run, made by ``/usr/bin/python3 -m venv`` without system site
  packages and without its own pip (``--without-pip``; this venv's pip installs into it with
  ``pip --python``, which saves the ensurepip step). Dependencies come from the package
  index; pip's cache makes later runs fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
NODE_XML = ROOT / "tests" / "data" / "test-node.xml"
PASSWORD = "packaging-test-password"
PROBE = "packaging_probe"
PROBE_DATA = "data/probe.json"
STORAGE_PLUGINS = {"storage_dir", "storage_lvm", "storage_nfs", "storage_rbd"}
TOP_LEVEL_SKIP = {"build", "dist", "data", "test-results"}  # build output, local state
START_TIMEOUT = 30.0


@dataclass
class Install:
    root: Path
    wheel: Path
    venv: Path
    env: dict[str, str]


def _run(cmd: list[str], **kw: object) -> str:
    """Run a command; on failure show its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{cmd} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _skipped(path: Path) -> bool:
    """Not source: dotfiles (venv, caches, VCS), bytecode, build metadata."""
    return (path.name.startswith(".") or path.name == "__pycache__"
            or path.suffix in {".pyc", ".pyo"} or path.name.endswith(".egg-info"))


def _ignore(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == ROOT
    return {n for n in names if _skipped(Path(n)) or (top and n in TOP_LEVEL_SKIP)}


def _copy_source(dest: Path) -> None:
    """Copy the working tree without venv, caches or build leftovers; add the probe plugin."""
    shutil.copytree(ROOT, dest, ignore=_ignore)
    probe = dest / "plugins" / PROBE
    (probe / "sub").mkdir(parents=True)
    (probe / "data").mkdir()
    (probe / "__init__.py").write_text('"""Probe plugin of the packaging test."""\n')
    (probe / "sub" / "__init__.py").write_text("")
    (probe / PROBE_DATA).write_text('{"probe": true}\n')


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "HVP_PLUGINS",
                        "HVP_DATA_DIR", "PYTHONSTARTUP"}}
    env["HVP_ADMIN_PASSWORD"] = PASSWORD
    return env


@pytest.fixture(scope="module")
def install() -> Iterator[Install]:
    root = Path(tempfile.mkdtemp(prefix="hvp-packaging-"))
    try:
        src, dist, venv = root / "src", root / "dist", root / "venv"
        _copy_source(src)
        env = _clean_env()
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
              str(src)], env=env, cwd=root)
        [wheel] = dist.glob("*.whl")
        _run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], env=env, cwd=root)
        _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
              "install", "-q", str(wheel)], env=env, cwd=root)
        yield Install(root, wheel, venv, env)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_wheel_contents(install: Install) -> None:
    with zipfile.ZipFile(install.wheel) as whl:
        names = set(whl.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_text = whl.read(entry_points).decode()
    tops = {n.split("/")[0] for n in names}
    assert "plugins" not in tops
    assert tops - {n for n in tops if n.endswith(".dist-info")} == {
        "hypervisor_panel", "hypervisor_panel_plugins"}
    assert "hypervisor_panel/cluster/__init__.py" in names
    # Every source module and data file of the tree is in the wheel.
    for pkg, installed_as in (("hypervisor_panel", "hypervisor_panel"),
                              ("plugins", "hypervisor_panel_plugins")):
        for path in (ROOT / pkg).rglob("*"):
            rel = path.relative_to(ROOT / pkg)
            if path.is_dir() or any(_skipped(Path(part)) for part in rel.parts):
                continue
            assert f"{installed_as}/{rel.as_posix()}" in names, f"{pkg}/{rel} not packaged"
    for expected in ("hypervisor_panel/data/demo-node.xml", "hypervisor_panel/web/static/ui.js",
                     "hypervisor_panel/web/templates/base.tpl",
                     f"hypervisor_panel_plugins/{PROBE}/sub/__init__.py",
                     f"hypervisor_panel_plugins/{PROBE}/{PROBE_DATA}"):
        assert expected in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    plugin_folders = {p.parent.name for p in (ROOT / "plugins").glob("*/__init__.py")}
    for name in plugin_folders | {PROBE}:
        assert f"{name} = hypervisor_panel_plugins.{name}\n" in entry_text
    assert "hypervisor-panel = hypervisor_panel.cli:main" in entry_text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _wait_healthy(base: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited {proc.returncode}:\n{log.read_text()}"
        try:
            status, body = _request(f"{base}/api/v1/health")
            if status == 200:
                assert body["status"] == "ok"
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no 200 from /api/v1/health in {START_TIMEOUT} s:\n{log.read_text()}")


def test_installed_console_script_serves(install: Install) -> None:
    cwd = install.root / "elsewhere"
    cwd.mkdir()
    node = install.root / "test-node.xml"
    shutil.copyfile(NODE_XML, node)
    python = install.venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=cwd, env=install.env).strip())
    assert site.resolve().is_relative_to(install.venv.resolve())
    assert not (site / "plugins").exists()
    code = ("import importlib.resources as r, hypervisor_panel, hypervisor_panel.cluster, "
            "hypervisor_panel_plugins as p; "
            "print(hypervisor_panel.__file__, hypervisor_panel.cluster.__file__, p.__file__); "
            f"print(r.files('hypervisor_panel_plugins.{PROBE}').joinpath('{PROBE_DATA}')"
            ".read_text().strip())")
    files, probe = _run([str(python), "-c", code], cwd=cwd, env=install.env).splitlines()
    for path in files.split():
        assert Path(path).is_relative_to(site), path
    assert probe == '{"probe": true}'

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = install.root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(install.venv / "bin" / "hypervisor-panel"), "serve", "--host", "127.0.0.1",
             "--port", str(port), "--data-dir", str(install.root / "data"),
             "--node-uri", f"test://{node}"],
            cwd=cwd, env=install.env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(base, proc, log)
        status, body = _request(f"{base}/api/v1/auth/login",
                                {"username": "admin", "password": PASSWORD})
        assert status == 200, body
        status, body = _request(f"{base}/api/v1/plugins", token=body["token"])
        assert status == 200, body
        plugins = {p["name"]: p for p in body["items"]}
        assert STORAGE_PLUGINS | {PROBE} <= set(plugins)
        for name in STORAGE_PLUGINS:
            assert plugins[name]["module"] == f"hypervisor_panel_plugins.{name}"
            assert plugins[name]["builtin"] and plugins[name]["distribution"] == "hypervisor-panel"
        with urllib.request.urlopen(f"{base}/static/panel.css", timeout=10) as resp:
            assert resp.status == 200  # package data: web/static
        with urllib.request.urlopen(f"{base}/login", timeout=10) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()  # web/templates
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
