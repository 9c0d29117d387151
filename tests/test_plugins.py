"""The plugin contract: entry points, HVP_PLUGINS, loud failures, documented hooks."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hypervisor_panel import hookspecs
from hypervisor_panel.errors import PluginLoadError
from hypervisor_panel.panel import Panel
from hypervisor_panel.plugins import get_plugin_manager
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.server import serve_in_thread
from tests.conftest import ADMIN_PASSWORD, node_uri_for
from tests.support.client import Client

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugin_hooks.md"

THIRD_PARTY = '''
from typing import ClassVar
import xml.etree.ElementTree as ET
from hypervisor_panel.hookspecs import hookimpl
from hypervisor_panel.routes import RouteTable
from hypervisor_panel.storage import StorageBackend

class ScratchStorage(StorageBackend):
    name: ClassVar[str] = "scratch"
    description: ClassVar[str] = "A third-party back end"
    build_flags = 0
    options_schema: ClassVar[dict] = {
        "type": "object", "additionalProperties": False, "required": ["path"],
        "properties": {"path": {"type": "string", "pattern": "^/"},
                       "speed": {"type": "integer", "minimum": 1, "default": 5}},
    }

    def pool_xml(self):
        pool = ET.Element("pool", type="dir")
        ET.SubElement(pool, "name").text = self.pool_name
        ET.SubElement(ET.SubElement(pool, "target"), "path").text = self.options["path"]
        return ET.tostring(pool, encoding="unicode")

SEEN = []

@hookimpl
def register_storage_backends(panel):
    return [ScratchStorage]

@hookimpl
def register_routes(panel):
    api = RouteTable()

    @api.route("/scratch/hello", summary="Say hello from a plugin")
    def hello(req):
        return {"hello": req.user["name"]}

    return list(api)

@hookimpl
def track_event(panel, event):
    SEEN.append(event["kind"])
'''


def fake_distribution(site: Path, dist: str, entry: str, module: str, code: str) -> None:
    """Install a plugin the way pip would: a module plus dist-info with entry points."""
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[hypervisor_panel]\n{entry} = {module}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def test_every_hook_is_documented_with_its_signature():
    text = DOCS.read_text()
    hooks = [name for name, obj in vars(hookspecs).items()
             if callable(obj) and hasattr(obj, "hypervisor_panel_spec")]
    assert len(hooks) == 11
    for name in hooks:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert re.search(rf"^## {name}\({re.escape(params)}\)", text, re.M), (
            f"docs/plugin_hooks.md lacks '## {name}({params})'")


def test_builtin_plugins_load_through_entry_points():
    pm = get_plugin_manager()
    assert pm.has_plugin("storage_dir")
    meta = pm.hvp_meta["storage_dir"]
    assert meta["builtin"] is True and meta["distribution"] == "hypervisor-panel"


def test_hvp_plugins_limits_what_loads(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HVP_PLUGINS", "")
    assert get_plugin_manager().has_plugin("storage_dir")
    monkeypatch.setenv("HVP_PLUGINS", "storage_dir")
    assert [n for n, _ in get_plugin_manager().list_name_plugin()] == ["storage_dir"]
    assert get_plugin_manager(plugins=[]).list_name_plugin() == []


def test_unknown_plugin_name_fails_loudly(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HVP_PLUGINS", "storage_dir,no_such_plugin")
    with pytest.raises(PluginLoadError, match="no_such_plugin"):
        get_plugin_manager()


def test_a_plugin_that_fails_to_import_stops_startup_naming_itself(site: Path):
    fake_distribution(site, "broken-plugin", "broken", "broken_plugin_mod",
                      "raise RuntimeError('missing dependency xyz')\n")
    with pytest.raises(PluginLoadError, match=r"plugin 'broken'.*missing dependency xyz"):
        get_plugin_manager()


def test_serve_exits_with_the_broken_plugins_name(site: Path, tmp_path: Path):
    fake_distribution(site, "broken-plugin", "broken", "broken_plugin_mod",
                      "raise RuntimeError('missing dependency xyz')\n")
    env = {**os.environ, "PYTHONPATH": str(site), "HVP_ADMIN_PASSWORD": "x" * 10}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "serve", "--port", "0",
         "--data-dir", str(tmp_path / "d"), "--node-uri", node_uri_for(tmp_path)],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 2
    assert "plugin 'broken'" in proc.stderr and "missing dependency xyz" in proc.stderr


def test_third_party_plugin_gets_api_validation_routes_and_events(site: Path, tmp_path: Path):
    fake_distribution(site, "scratch-plugin", "scratch", "scratch_plugin_mod", THIRD_PARTY)
    panel = Panel(tmp_path / "data", local_uri=node_uri_for(tmp_path),
                  default_storage_path=None)
    panel.start(admin_password=ADMIN_PASSWORD)
    srv, port = serve_in_thread(create_app(panel))
    try:
        admin = Client(f"http://127.0.0.1:{port}").login("admin", ADMIN_PASSWORD)
        assert admin.get("/api/v1/scratch/hello").body == {"hello": "admin"}
        assert Client(admin.base).get("/api/v1/scratch/hello").status == 401
        spec = admin.get("/api/v1/openapi.json").body
        assert "/api/v1/scratch/hello" in spec["paths"]
        backends = {b["name"]: b for b in admin.get("/api/v1/storage-backends").body["items"]}
        assert backends["scratch"]["options_schema"]["properties"]["speed"]["default"] == 5
        bad = admin.post("/api/v1/storages", {"name": "s1", "backend": "scratch",
                                              "options": {"path": "relative"}})
        assert bad.status == 422 and bad.body["error"]["details"][0]["field"] == "options.path"
        good = admin.post("/api/v1/storages", {"name": "s1", "backend": "scratch",
                                               "options": {"path": str(tmp_path / "s")}})
        assert good.status == 201, good
        assert good.body["options"] == {"path": str(tmp_path / "s"), "speed": 5}
        plugins = {p["name"]: p for p in admin.get("/api/v1/plugins").body["items"]}
        assert plugins["scratch"]["builtin"] is False
        assert "register_routes" in plugins["scratch"]["hooks"]
        import scratch_plugin_mod

        assert "storage.create" in scratch_plugin_mod.SEEN
    finally:
        srv.stop()
        panel.close()
