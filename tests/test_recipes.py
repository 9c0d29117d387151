"""Recipes: VMmanager's format and the panel's extensions, safe sources, the API, and the
SSH runner for real against the project's sshd (a private OpenSSH on 127.0.0.1 that logs
in as root: "the guest" is this machine, so its processes and files can be checked).
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import hypervisor_panel_plugins.recipes as recipes_plugin
import jsonschema
import pytest
from hypervisor_panel_plugins.recipes.archive import read_archive
from hypervisor_panel_plugins.recipes.folder import FolderSource
from hypervisor_panel_plugins.recipes.url import UrlSource

from hypervisor_panel.errors import Invalid, PanelError, Unavailable
from hypervisor_panel.guest_ssh import GuestEndpoint, env_file, interpreter, wait_for_banner
from hypervisor_panel.panel import Panel
from hypervisor_panel.plugins import get_plugin_manager
from hypervisor_panel.recipe_format import (
    DEFAULT_TIMEOUT,
    SECRET_MASK,
    check_params,
    compatible,
    parse,
    parse_duration,
    serialize,
)
from hypervisor_panel.recipe_service import RUNS, RecipeService
from hypervisor_panel.recipes import RecipeSourceUnavailable, UnsafeSource
from hypervisor_panel.routes import RouteTable
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.server import serve_in_thread
from tests.conftest import ADMIN_PASSWORD, DATA, node_uri_for
from tests.support.api import assert_error, small_template
from tests.support.client import Client
from tests.support.cluster import make_client_key, remove_dir, short_tempdir, start_sshd, stop_sshd

SAMPLES = DATA / "recipes"
ADMIN = {"id": "admin-id", "name": "admin", "role": "admin"}
ALICE = {"id": "alice-id", "name": "alice", "role": "user"}


@contextlib.contextmanager
def raises_code(code: str) -> Iterator[None]:
    """Expect a PanelError with this code."""
    with pytest.raises(PanelError) as caught:
        yield
    assert caught.value.code == code, caught.value.message


def recipe(name: str = "demo", tags: str = "debian", body: str = "echo hi\n",
           extra: str = "", shebang: str = "#!/bin/sh") -> str:
    """A recipe script in VMmanager's format; ``extra`` adds metadata lines."""
    lines = "".join(f"# {line}\n" for line in extra.splitlines() if line)
    return (f"{shebang}\n# metadata_begin\n# recipe: {name}\n# tags: {tags}\n# revision: 1\n"
            f"{lines}# metadata_end\n{body}")


# -- the format ----------------------------------------------------------------------------
def test_vmmanager_recipes_are_read_unchanged():
    hello = parse((SAMPLES / "hello_world.sh").read_text())
    assert (hello.name, hello.tags, hello.revision) == ("hello_world",
                                                        ("debian", "ubuntu2204", "centos7"), 3)
    assert hello.description == "Prints a greeting" and hello.params == ()
    assert (hello.timeout, hello.access) == (DEFAULT_TIMEOUT, "all") == (3 * 3600, "all")
    lamp = parse((SAMPLES / "lamp.sh").read_text())
    assert lamp.name == "LAMP" and lamp.revision == 6
    assert lamp.descriptions == {"ru": "LAMP (Linux, Apache, MySQL, PHP)",
                                 "en": "LAMP (Linux, Apache, MySQL, PHP)"}
    assert lamp.extra == (("os_family", "linux"),)  # unknown keys are kept
    redmine = parse((SAMPLES / "redmine.sh").read_text())
    assert redmine.descriptions["ru"].startswith("Система") and redmine.tags == ("centos7",)


def test_the_extension_keys():
    meta = parse((SAMPLES / "webapp.sh").read_text())
    assert (meta.timeout, meta.access) == (90 * 60, "admins")
    by_name = {p.name: p for p in meta.params}
    assert by_name["APP_NAME"].default == "shop"
    assert by_name["APP_NAME"].description == "Name of the app"
    assert by_name["WORKERS"].type == "int" and by_name["DEBUG"].type == "bool"
    assert by_name["MODE"].choices == ("dev", "prod")
    password = by_name["DB_PASSWORD"]
    assert password.required and password.secret and password.default is None
    assert [parse_duration(t) for t in ("3h", "90m", "1h30m", "600", "45s")] == \
        [10800, 5400, 5400, 600, 45]


def test_serialize_round_trips():
    for path in SAMPLES.glob("*.sh"):
        meta = parse(path.read_text())
        assert parse(serialize(meta) + "echo body\n") == meta, path.name
    odd = parse(recipe(extra="param: MSG type=string default=\"it's a 'quote'\" "
                             "description=\"two words\"\ntimeout: 61"))
    assert parse(serialize(odd)) == odd and odd.params[0].default == "it's a 'quote'"


BAD_RECIPES = {
    "no block": ("#!/bin/sh\necho hi\n", "recipe_no_metadata"),
    "no end": ("# metadata_begin\n# recipe: a\n# tags: x\necho hi\n", "bad_recipe"),
    "unterminated": ("# metadata_begin\n# recipe: a\n# tags: x\n", "bad_recipe"),
    "no name": ("# metadata_begin\n# tags: x\n# metadata_end\n", "bad_recipe"),
    "no tags": ("# metadata_begin\n# recipe: a\n# metadata_end\n", "bad_recipe"),
    "empty tags": (recipe(tags=" , "), "bad_recipe"),
    "slash": (recipe(name="../etc/passwd"), "bad_recipe"),
    "separator": (recipe(name="a/b"), "bad_recipe"),
    "backslash": (recipe(name="a\\b"), "bad_recipe"),
    "dotdot": (recipe(name=".."), "bad_recipe"),
    "twice": (recipe(extra="recipe: other"), "bad_recipe"),
    "two blocks": (recipe() + recipe(), "bad_recipe"),
    "no colon": (recipe(extra="just words"), "bad_recipe"),
    "revision": (recipe().replace("revision: 1", "revision: one"), "bad_recipe"),
    "param twice": (recipe(extra="param: A\nparam: A type=int"), "bad_recipe"),
    "bad type": (recipe(extra="param: A type=float"), "bad_recipe"),
    "bad enum": (recipe(extra="param: A type=enum()"), "bad_recipe"),
    "bad default": (recipe(extra="param: A type=int default=many"), "bad_recipe"),
    "bad flag": (recipe(extra="param: A required=maybe"), "bad_recipe"),
    "unknown attribute": (recipe(extra="param: A colour=red"), "bad_recipe"),
    "reserved name": (recipe(extra="param: PATH"), "bad_recipe"),
    "bad param name": (recipe(extra="param: 1A"), "bad_recipe"),
    "required with default": (recipe(extra="param: A required=yes default=x"), "bad_recipe"),
    "bad timeout": (recipe(extra="timeout: soon"), "bad_recipe"),
    "zero timeout": (recipe(extra="timeout: 0"), "bad_recipe"),
    "bad access": (recipe(extra="access: everyone"), "bad_recipe"),
    "nul": (recipe(body="echo \0\n"), "bad_recipe"),
    "too big": (recipe(body="#" * (600 * 1024)), "bad_recipe"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipes_are_refused_with_a_clear_error(case: str):
    text, code = BAD_RECIPES[case]
    with pytest.raises(Invalid) as caught:
        parse(text)
    assert caught.value.code in (code, "bad_recipe_name"), caught.value.message
    assert caught.value.message and "Traceback" not in caught.value.message


def test_a_bad_name_names_the_rule():
    with pytest.raises(Invalid, match="no path separators") as caught:
        parse(recipe(name="x/../y"))
    assert caught.value.code == "bad_recipe_name"


def test_parameters_are_checked_against_their_types():
    meta = parse((SAMPLES / "webapp.sh").read_text())
    values = check_params(meta, {"DB_PASSWORD": "pw-123456", "WORKERS": "4", "DEBUG": True})
    assert values.env == {"APP_NAME": "shop", "WORKERS": "4", "DEBUG": "1", "MODE": "prod",
                          "DB_PASSWORD": "pw-123456"}
    assert values.public["DB_PASSWORD"] == SECRET_MASK and "pw-123456" in values.secrets
    assert values.redact("the password is pw-123456!") == f"the password is {SECRET_MASK}!"
    assert check_params(meta, {"DB_PASSWORD": "x", "WORKERS": 3}).env["WORKERS"] == "3"
    bad = [{}, {"DB_PASSWORD": "x", "WORKERS": "four"}, {"DB_PASSWORD": "x", "WORKERS": True},
           {"DB_PASSWORD": "x", "DEBUG": "perhaps"}, {"DB_PASSWORD": "x", "MODE": "test"},
           {"DB_PASSWORD": 5}, {"DB_PASSWORD": "x", "NOPE": "1"}, {"DB_PASSWORD": "a\0b"}]
    for params in bad:
        with pytest.raises(Invalid) as caught:
            check_params(meta, params)
        assert caught.value.code == "bad_recipe_params", params
    with pytest.raises(Invalid, match="needs parameter 'DB_PASSWORD'"):
        check_params(meta, {})
    with pytest.raises(Invalid) as caught:
        check_params(meta, {"DB_PASSWORD": 12})
    assert "12" not in caught.value.message  # a secret's wrong value is not echoed


def test_compatibility_is_one_shared_tag():
    assert compatible(["debian", "ubuntu2204"], ["Ubuntu2204", "linux"])
    assert not compatible(["centos7"], ["debian"]) and not compatible(["x"], [])


def test_the_environment_file_survives_a_shell_intact(tmp_path: Path):
    nasty = "a b'c\"d $(touch {p}) `touch {p}`;|&<>*? \\n\nsecond line\t$HOME ${{X}}"
    value = nasty.format(p=tmp_path / "pwned")
    path = tmp_path / "env"
    path.write_text(env_file({"V": value, "EMPTY": ""}))
    out = subprocess.run(["sh", "-c", f'. {path} && printf %s "$V" && printf "|%s|" "$EMPTY"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == value + "||" and not (tmp_path / "pwned").exists()
    with pytest.raises(Invalid):
        env_file({"BAD NAME": "x"})
    assert interpreter("#!/bin/bash -e\necho") == ["/bin/bash", "-e"]
    assert interpreter("#!/usr/bin/env bash\n") == ["/usr/bin/env", "bash"]
    assert interpreter("echo no shebang") == interpreter("#!/bin/sh;rm -rf /\n") == ["/bin/sh"]


# -- safe sources --------------------------------------------------------------------------
def tar_bytes(members: list[tarfile.TarInfo], payload: bytes = b"", gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


def good_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(SAMPLES.glob("*.sh")):
            tar.add(path, arcname=f"recipes/{path.name}")
        tar.add(SAMPLES / "README.txt", arcname="recipes/README.txt")
        tar.addfile(member("recipes/alias.sh", tarfile.SYMTYPE, "hello_world.sh"))
    return buf.getvalue()


def test_a_good_archive_yields_its_scripts():
    found = {item.origin: item for item in read_archive(good_archive(), "r.tar.gz")}
    assert sorted(found) == [f"recipes/{p.name}" for p in sorted(SAMPLES.glob("*.sh"))]
    assert parse(found["recipes/hello_world.sh"].script).name == "hello_world"


EVIL_TARS = {
    "dotdot": ([member("../evil.sh", size=3)], "unsafe_path"),
    "nested dotdot": ([member("recipes/../../evil.sh", size=3)], "unsafe_path"),
    "absolute": ([member("/etc/cron.d/evil.sh", size=3)], "unsafe_path"),
    "symlink out": ([member("recipes/x.sh", tarfile.SYMTYPE, "../../etc/passwd")],
                    "unsafe_link"),
    "absolute symlink": ([member("x.sh", tarfile.SYMTYPE, "/etc/shadow")], "unsafe_link"),
    "hardlink out": ([member("x.sh", tarfile.LNKTYPE, "../outside")], "unsafe_link"),
}


@pytest.mark.parametrize("case", sorted(EVIL_TARS))
def test_malicious_archives_are_refused_whole(case: str, tmp_path: Path, monkeypatch):
    members, code = EVIL_TARS[case]
    data = tar_bytes([member("recipes/ok.sh", size=3), *members], b"abc")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsafeSource) as caught:
        list(read_archive(data, "evil.tar.gz"))
    assert caught.value.code == code and caught.value.message
    assert list(tmp_path.iterdir()) == [] and not Path("/etc/cron.d/evil.sh").exists()


def test_malicious_zips_are_refused():
    for name, attr, code in (("../evil.sh", 0, "unsafe_path"),
                             ("x.sh", (0o120777 << 16), "unsafe_link")):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("ok.sh", recipe())
            info = zipfile.ZipInfo(name)
            info.external_attr = attr
            archive.writestr(info, "../../etc/passwd")
        with pytest.raises(UnsafeSource) as caught:
            list(read_archive(buf.getvalue(), "evil.zip"))
        assert caught.value.code == code


def test_garbage_is_not_an_archive():
    with pytest.raises(UnsafeSource, match="not a readable tar"):
        list(read_archive(b"\x1f\x8b garbage", "x.tar.gz"))
    with pytest.raises(UnsafeSource, match="not a tar or zip"):
        list(read_archive(b"hello", "x.bin"))


def test_the_folder_source(tmp_path: Path):
    source = FolderSource()
    items = list(source.recipes({"path": str(SAMPLES)}))
    assert sorted(i.origin for i in items) == sorted(p.name for p in SAMPLES.glob("*.sh"))
    with pytest.raises(RecipeSourceUnavailable):
        list(source.recipes({"path": str(tmp_path / "missing")}))
    (tmp_path / "out.sh").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeSource, match="links outside"):
        list(source.recipes({"path": str(tmp_path)}))


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static HTTP server on 127.0.0.1 serving a temporary folder."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_the_url_source_reads_archives_indexes_and_scripts(web: tuple[str, Path]):
    base, root = web
    (root / "recipes.tar.gz").write_bytes(good_archive())
    (root / "s").mkdir()
    hello = (SAMPLES / "hello_world.sh").read_bytes()
    (root / "s" / "hello.sh").write_bytes(hello)
    (root / "s" / "lamp.sh").write_bytes((SAMPLES / "lamp.sh").read_bytes())
    digest = hashlib.sha256(hello).hexdigest()
    (root / "index.json").write_text(json.dumps(
        {"recipes": [{"url": "s/hello.sh", "sha256": digest}, f"{base}/s/lamp.sh"]}))
    (root / "index.txt").write_text(f"# my recipes\ns/hello.sh {digest}\n\ns/lamp.sh\n")
    (root / "bad-sum.json").write_text(json.dumps(
        {"recipes": [{"url": "s/hello.sh", "sha256": "0" * 64}]}))
    source = UrlSource()
    names = {u: sorted(parse(i.script).name for i in source.recipes({"url": f"{base}/{u}"}))
             for u in ("recipes.tar.gz", "index.json", "index.txt", "s/hello.sh")}
    assert names["recipes.tar.gz"] == ["LAMP", "Redmine", "hello_world", "webapp"]
    assert names["index.json"] == names["index.txt"] == ["LAMP", "hello_world"]
    assert names["s/hello.sh"] == ["hello_world"]
    with pytest.raises(UnsafeSource) as caught:
        list(source.recipes({"url": f"{base}/bad-sum.json"}))
    assert caught.value.code == "checksum_mismatch"
    with pytest.raises(RecipeSourceUnavailable, match="HTTP 404"):
        list(source.recipes({"url": f"{base}/missing.tar.gz"}))
    with pytest.raises(UnsafeSource):  # the index may not point elsewhere than http(s)
        (root / "file.txt").write_text("file:///etc/passwd\n")
        list(source.recipes({"url": f"{base}/file.txt"}))


def test_the_url_source_enforces_its_size_limit(web, monkeypatch):
    base, root = web
    (root / "big.tar.gz").write_bytes(os.urandom(4096))
    monkeypatch.setattr("hypervisor_panel_plugins.recipes.url.MAX_DOWNLOAD_BYTES", 1000)
    with pytest.raises(UnsafeSource) as caught:
        list(UrlSource().recipes({"url": f"{base}/big.tar.gz"}))
    assert caught.value.code == "download_too_big"


def test_waiting_for_the_ssh_banner():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens: a booting guest
    with pytest.raises(Unavailable) as caught:
        wait_for_banner("127.0.0.1", port, timeout=1.5, interval=0.2)
    assert caught.value.code == "guest_ssh_timeout"

    def late_sshd() -> None:
        time.sleep(1.0)
        with socket.create_server(("127.0.0.1", port)) as server:
            conn, _ = server.accept()
            conn.sendall(b"SSH-2.0-Fake\r\n")
            conn.close()

    thread = threading.Thread(target=late_sshd)
    thread.start()
    assert wait_for_banner("127.0.0.1", port, timeout=10, interval=0.2) == "SSH-2.0-Fake"
    thread.join()


# -- the service and the API ---------------------------------------------------------------
def wire(panel: Panel) -> RecipeService:
    """What panel.py and api/__init__.py do once the recipes are wired in."""
    if getattr(panel, "recipes", None) is None:
        panel.recipes = RecipeService(panel.store, panel.tasks, panel.events,
                                      panel.references, panel.registry.recipe_sources)
        panel.recipes.require_vm = panel.vms.require
    if not any(route.path == "/recipes" for route in panel.routes):
        from hypervisor_panel.api import recipes as recipe_routes

        table = RouteTable()
        recipe_routes.declare(table, panel)
        panel.routes.extend(table)
    return panel.recipes


@pytest.fixture
def rpanel(tmp_path: Path) -> Iterator[Panel]:
    pm = get_plugin_manager()
    if pm.get_plugin("recipes") is None:  # until the entry point is installed (pip -e .)
        pm.register(recipes_plugin, name="recipes")
    panel = Panel(tmp_path / "data", pm=pm, local_uri=node_uri_for(tmp_path),
                  default_storage_path=str(tmp_path / "images"))
    panel.start(admin_password=ADMIN_PASSWORD)
    wire(panel)
    yield panel
    panel.close()


@pytest.fixture
def api(rpanel: Panel) -> Iterator[dict]:
    srv, port = serve_in_thread(create_app(rpanel))
    base = f"http://127.0.0.1:{port}"
    admin = Client(base).login("admin", ADMIN_PASSWORD)
    made = admin.post("/api/v1/users", {"name": "alice", "password": "alice-password",
                                        "role": "user"})
    assert made.status == 201, made
    alice = Client(base).login("alice", "alice-password")
    yield {"admin": admin, "alice": alice, "panel": rpanel, "base": base}
    srv.stop()


def test_recipes_crud_and_who_sees_what(api: dict):
    admin, alice = api["admin"], api["alice"]
    hello = admin.post("/api/v1/recipes", {"script": (SAMPLES / "hello_world.sh").read_text()})
    assert hello.status == 201 and hello.body["name"] == "hello_world", hello
    web = admin.post("/api/v1/recipes", {"script": (SAMPLES / "webapp.sh").read_text()})
    assert web.body["access"] == "admins"
    assert {p["name"]: p for p in web.body["params"]}["DB_PASSWORD"]["secret"] is True
    assert_error(admin.post("/api/v1/recipes", {"script": (SAMPLES / "hello_world.sh")
                                                .read_text()}), 409, "already_exists")
    assert [r["name"] for r in alice.get("/api/v1/recipes").body["items"]] == ["hello_world"]
    seen = alice.get(f"/api/v1/recipes/{hello.body['id']}").body
    assert "script" not in seen and seen["usable"] is True
    assert "script" in admin.get(f"/api/v1/recipes/{hello.body['id']}").body
    assert_error(alice.get(f"/api/v1/recipes/{web.body['id']}"), 404, "recipe_not_found")
    assert [r["name"] for r in admin.get("/api/v1/recipes?tags=centos7").body["items"]] == \
        ["hello_world"]
    changed = admin.patch(f"/api/v1/recipes/{hello.body['id']}", {
        "script": (SAMPLES / "hello_world.sh").read_text().replace("revision: 3", "revision: 4")})
    assert changed.status == 200 and changed.body["revision"] == 4
    hidden = admin.patch(f"/api/v1/recipes/{hello.body['id']}", {"access": "nobody"})
    assert hidden.body["access"] == "nobody" and alice.get("/api/v1/recipes").body["items"] == []
    assert admin.request("DELETE", f"/api/v1/recipes/{hello.body['id']}").status == 204
    assert_error(admin.get(f"/api/v1/recipes/{hello.body['id']}"), 404)


def test_bad_recipes_create_nothing(api: dict):
    admin = api["admin"]
    for script, code in (("#!/bin/sh\necho no metadata\n", "recipe_no_metadata"),
                         (recipe(name="../../etc/x"), "bad_recipe_name"),
                         (recipe(extra="param: N type=int default=x"), "bad_recipe")):
        assert_error(admin.post("/api/v1/recipes", {"script": script}), 422, code)
    assert_error(admin.post("/api/v1/recipes", {"script": ""}), 422)
    assert_error(admin.post("/api/v1/recipes", {"script": recipe(), "x": 1}), 422)
    assert admin.get("/api/v1/recipes").body["items"] == []


def test_users_add_recipes_only_when_allowed(api: dict):
    admin, alice = api["admin"], api["alice"]
    assert alice.get("/api/v1/recipe-settings").body == {"users_may_add": False,
                                                         "default_recipe": None}
    assert_error(alice.post("/api/v1/recipes", {"script": recipe("mine")}), 403,
                 "recipes_admin_only")
    assert_error(alice.patch("/api/v1/recipe-settings", {"users_may_add": True}), 403)
    assert admin.patch("/api/v1/recipe-settings", {"users_may_add": True}).status == 200
    mine = alice.post("/api/v1/recipes", {"script": recipe("mine")})
    assert mine.status == 201 and mine.body["owner"] and "script" in mine.body
    assert [r["name"] for r in alice.get("/api/v1/recipes").body["items"]] == ["mine"]
    assert admin.get(f"/api/v1/recipes/{mine.body['id']}").status == 200
    theirs = admin.post("/api/v1/recipes", {"script": recipe("theirs")}).body
    assert_error(alice.patch(f"/api/v1/recipes/{theirs['id']}", {"access": "nobody"}), 403,
                 "not_your_recipe")
    assert alice.request("DELETE", f"/api/v1/recipes/{mine.body['id']}").status == 204


def test_choose_by_id_name_default_tags_and_access(rpanel: Panel):
    svc = rpanel.recipes
    centos = svc.add({"script": recipe("setup", "centos7", "echo centos\n")}, ADMIN)
    debian = svc.add({"script": recipe("setup", "debian,ubuntu2204", "echo deb\n")}, ADMIN)
    admins = svc.add({"script": recipe("tools", "debian", extra="access: admins")}, ADMIN)
    assert svc.choose(centos["id"], ["centos7"], ALICE)["id"] == centos["id"]
    assert svc.choose("setup", ["ubuntu2204"], ALICE)["id"] == debian["id"]
    assert svc.choose("setup", ["centos7"], ALICE)["id"] == centos["id"]
    with pytest.raises(Invalid) as caught:
        svc.choose(centos["id"], ["debian"], ALICE)  # the wrong OS
    assert caught.value.code == "recipe_incompatible"
    with pytest.raises(Invalid, match="does not suit"):
        svc.choose("setup", ["windows"], ALICE)
    with raises_code("recipe_not_found"):
        svc.choose(admins["id"], ["debian"], ALICE)
    assert svc.choose(admins["id"], ["debian"], ADMIN)["name"] == "tools"
    with raises_code("recipe_not_found"):
        svc.choose("nothing", None, ADMIN)
    assert svc.choose(None, ["debian"], ALICE) is None  # no default set
    with pytest.raises(Invalid):
        svc.update_settings({"default_recipe": "nothing"})
    svc.update_settings({"default_recipe": "setup"})
    assert svc.choose(None, ["ubuntu2204"], ALICE)["id"] == debian["id"]
    assert svc.choose(None, ["centos7"], ALICE)["id"] == centos["id"]
    assert svc.choose(None, ["windows"], ALICE) is None  # nothing of that name fits
    svc.edit(debian["id"], {"access": "nobody"}, ADMIN)
    with raises_code("recipe_not_allowed"):
        svc.choose(debian["id"], ["debian"], ADMIN)


def test_bad_parameters_refuse_a_run_before_anything_is_made(rpanel: Panel):
    svc = rpanel.recipes
    rec = svc.add({"script": (SAMPLES / "webapp.sh").read_text()}, ADMIN)
    endpoint = GuestEndpoint("127.0.0.1", 1, "root", "/nonexistent", "ssh-ed25519 AAAA")
    tasks_before = len(rpanel.tasks.visible(ADMIN))
    for params in ({}, {"DB_PASSWORD": "x", "WORKERS": "many"}, {"DB_PASSWORD": "x", "Q": 1}):
        with pytest.raises(Invalid) as caught:
            svc.run(endpoint, rec["id"], params, ADMIN, "vm1", template_tags=["debian"])
        assert caught.value.code == "bad_recipe_params"
    with pytest.raises(Invalid) as caught:
        svc.run(endpoint, rec["id"], {"DB_PASSWORD": "x"}, ADMIN, "vm1",
                template_tags=["centos7"])
    assert caught.value.code == "recipe_incompatible"
    assert rpanel.store.all(RUNS) == [] and len(rpanel.tasks.visible(ADMIN)) == tasks_before


def test_a_guest_that_never_answers_fails_the_run_with_the_reason(rpanel: Panel):
    svc = rpanel.recipes
    rec = svc.add({"script": recipe()}, ADMIN)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = GuestEndpoint("127.0.0.1", port, "root", "/nonexistent", "ssh-ed25519 AAAA")
    task = rpanel.tasks.wait(svc.run(endpoint, rec, {}, ADMIN, "vm1", boot_timeout=1)["id"], 20)
    assert task["state"] == "failed" and task["error"]["code"] == "guest_ssh_timeout"
    run = rpanel.store.all(RUNS)[0]
    assert run["state"] == "failed" and "did not answer" in run["error"]["message"]


def copy_samples(tmp_path: Path) -> Path:
    folder = tmp_path / "library"
    shutil.copytree(SAMPLES, folder)
    return folder


def test_a_folder_source_is_added_refreshed_and_removed(api: dict, tmp_path: Path):
    admin, panel = api["admin"], api["panel"]
    folder = copy_samples(tmp_path)
    kinds = {k["name"] for k in admin.get("/api/v1/recipe-source-kinds").body["items"]}
    assert kinds >= {"folder", "url"}
    task = admin.run("POST", "/api/v1/recipe-sources", {
        "name": "library", "source": "folder", "options": {"path": str(folder)}})
    assert sorted(task["result"]["added"]) == ["LAMP", "Redmine", "hello_world", "webapp"]
    source = admin.get("/api/v1/recipe-sources").body["items"][0]
    assert source["recipes"] == 4 and source["name"] == "library"
    hello = next(r for r in admin.get("/api/v1/recipes").body["items"]
                 if r["name"] == "hello_world")
    assert hello["origin"] == {"kind": "source", "source": source["id"],
                               "path": "hello_world.sh"}
    assert_error(admin.request("DELETE", f"/api/v1/recipes/{hello['id']}"), 409,
                 "recipe_from_source")
    assert_error(admin.patch(f"/api/v1/recipes/{hello['id']}", {"script": recipe()}), 409)
    admin.patch(f"/api/v1/recipes/{hello['id']}", {"access": "admins"})
    text = (folder / "hello_world.sh").read_text()
    (folder / "hello_world.sh").write_text(text.replace("revision: 3", "revision: 4"))
    (folder / "redmine.sh").unlink()
    (folder / "broken.sh").write_text("#!/bin/sh\necho no metadata here\n")
    again = admin.run("POST", f"/api/v1/recipe-sources/{source['id']}/actions/refresh", {})
    result = again["result"]
    assert result["updated"] == ["hello_world 3 -> 4"] and result["removed"] == ["Redmine"]
    assert sorted(result["unchanged"]) == ["LAMP", "webapp"] and not result["added"]
    assert result["skipped"][0]["origin"] == "broken.sh"
    assert "no metadata block" in result["skipped"][0]["reason"]
    assert any("skipped broken.sh" in line for line in again["log"])
    refreshed = admin.get(f"/api/v1/recipes/{hello['id']}").body
    assert refreshed["revision"] == 4 and refreshed["access"] == "admins"  # kept
    assert admin.request("DELETE", f"/api/v1/recipe-sources/{source['id']}").status == 204
    assert admin.get("/api/v1/recipes").body["items"] == []
    assert panel.store.all("recipe_sources") == []


def test_a_failing_or_unsafe_source_creates_nothing(api: dict, tmp_path: Path, web):
    admin = api["admin"]
    base, root = web
    (root / "evil.tar.gz").write_bytes(tar_bytes([member("../evil.sh", size=3)], b"abc"))
    cases = [({"source": "folder", "options": {"path": str(tmp_path / "missing")}},
              "no_such_folder"),
             ({"source": "url", "options": {"url": f"{base}/evil.tar.gz"}}, "unsafe_path"),
             ({"source": "url", "options": {"url": f"{base}/nothing.zip"}},
              "recipe_source_unreachable")]
    for body, code in cases:
        task = admin.run("POST", "/api/v1/recipe-sources", {"name": "s", **body},
                         expect="failed")
        assert task["error"]["code"] == code, task
    assert_error(admin.post("/api/v1/recipe-sources", {"name": "s", "source": "url",
                                                       "options": {"url": "ftp://x"}}), 422)
    assert_error(admin.post("/api/v1/recipe-sources", {"name": "s", "source": "nope"}), 422)
    assert_error(api["alice"].get("/api/v1/recipe-sources"), 403, "admin_only")
    assert admin.get("/api/v1/recipe-sources").body["items"] == []
    assert admin.get("/api/v1/recipes").body["items"] == []


def test_a_url_source_through_the_api(api: dict, web):
    admin = api["admin"]
    base, root = web
    (root / "recipes.tar.gz").write_bytes(good_archive())
    task = admin.run("POST", "/api/v1/recipe-sources", {
        "name": "repo", "source": "url", "options": {"url": f"{base}/recipes.tar.gz"}})
    assert len(task["result"]["added"]) == 4
    assert {r["origin"]["path"] for r in admin.get("/api/v1/recipes").body["items"]} == \
        {f"recipes/{p.name}" for p in SAMPLES.glob("*.sh")}


def test_the_openapi_document_and_answers_match(api: dict, tmp_path: Path):
    admin = api["admin"]
    admin.post("/api/v1/recipes", {"script": (SAMPLES / "webapp.sh").read_text()})
    admin.run("POST", "/api/v1/recipe-sources", {
        "name": "lib", "source": "folder", "options": {"path": str(copy_samples(tmp_path))}})
    spec = admin.get("/api/v1/openapi.json").body
    paths = spec["paths"]
    for path in ("/api/v1/recipes", "/api/v1/recipes/{recipe_id}", "/api/v1/recipe-sources",
                 "/api/v1/recipe-sources/{source_id}/actions/refresh",
                 "/api/v1/recipe-settings", "/api/v1/vms/{vm_id}/recipe-runs"):
        assert path in paths, path
        for method, op in paths[path].items():
            if method in ("post", "patch"):
                assert op["requestBody"]["content"]["application/json"]["schema"], path
    vm = admin.run("POST", "/api/v1/vms", {"name": "shaped",
                                           "vm_template": small_template(admin)["id"]})
    ids = {"recipe_id": admin.get("/api/v1/recipes").body["items"][0]["id"],
           "source_id": admin.get("/api/v1/recipe-sources").body["items"][0]["id"],
           "vm_id": vm["result"]["vm"]}
    for path in [p for p in paths if "recipe" in p]:
        if "get" not in paths[path]:
            continue
        concrete = path.removeprefix("/api/v1")
        for name, value in ids.items():
            concrete = concrete.replace("{" + name + "}", value)
        resp = admin.get("/api/v1" + concrete)
        assert resp.status == 200, (path, resp)
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]
        jsonschema.validate(resp.body, schema["schema"])


def test_runs_of_a_vm_are_visible_to_its_owner_only(api: dict):
    admin, alice = api["admin"], api["alice"]
    vm = admin.run("POST", "/api/v1/vms", {"name": "adminvm",
                                           "vm_template": small_template(admin)["id"]})
    vm_id = vm["result"]["vm"]
    assert admin.get(f"/api/v1/vms/{vm_id}/recipe-runs").body == {"items": []}
    assert_error(alice.get(f"/api/v1/vms/{vm_id}/recipe-runs"), 404, "vm_not_found")


# -- running for real over SSH -------------------------------------------------------------
def _stat(pid_dir: Path) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...)."""
    return pid_dir.joinpath("stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            children.setdefault(int(_stat(proc)[1]), set()).add(int(proc.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), set()) - found:
            found.add(child)
            todo.append(child)
    return found


def live(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            if _stat(Path(f"/proc/{pid}"))[0] != "Z":
                out.add(pid)
    return out


@pytest.fixture(scope="module")
def guest() -> Iterator[dict]:
    """The project's sshd on 127.0.0.1, a key it accepts and the pinned host key."""
    folder = short_tempdir("hvps-")
    sshd = None
    try:
        sshd = start_sshd(folder)
        key, pub = make_client_key(folder / "guest_key")
        sshd.authorize_key(pub)
        endpoint = GuestEndpoint("127.0.0.1", sshd.port, "root", key, " ".join(sshd.host_key))
        yield {"endpoint": endpoint, "dir": folder}
    finally:
        sessions = descendants(sshd.pid) if sshd else set()
        stop_sshd(folder)
        deadline = time.monotonic() + 10
        while live(sessions) and time.monotonic() < deadline:
            time.sleep(0.05)  # its connection processes end once their client has gone
        for pid in live(sessions):  # children of the sshd this fixture started
            with contextlib.suppress(OSError):
                os.kill(pid, 15)
        remove_dir(folder)


@pytest.fixture
def runner(rpanel: Panel, guest: dict) -> Iterator[dict]:
    before = set(glob.glob("/tmp/hvp-recipe-*"))
    yield {"panel": rpanel, "svc": rpanel.recipes, "endpoint": guest["endpoint"]}
    assert set(glob.glob("/tmp/hvp-recipe-*")) == before  # the guest's temp files are gone


def start(runner: dict, script: str, params: dict | None = None, **kw) -> dict:
    svc = runner["svc"]
    rec = svc.add({"script": script}, ADMIN)
    return svc.run(runner["endpoint"], rec, params or {}, ADMIN, kw.pop("vm", "vm1"), **kw)


def wait_for_line(panel: Panel, task_id: str, needle: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = panel.tasks.get(task_id)["log"]
        if any(needle in line for line in log):
            return log
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} never reached the task log: {log}")


def alive_in_group(pgid: int) -> list[str]:
    """Live (not zombie) processes of a process group on this machine (the guest)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError):
            fields = _stat(proc)
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(proc.name)
    return found


def killed_group(log: list[str]) -> int:
    match = next(m for line in log if (m := re.search(r"killing process group (\d+)", line)))
    return int(match.group(1))


@pytest.mark.slow
def test_output_streams_into_the_task_log_as_it_is_printed(runner: dict):
    panel = runner["panel"]
    body = 'echo "first $(date +%s.%N)"\nsleep 2\necho "second $(date +%s.%N)"\n'
    task = start(runner, recipe("stream", body=body))
    log = wait_for_line(panel, task["id"], " first ")
    seen = time.time()
    printed = float(next(line for line in log if " first " in line).split()[-1])
    assert seen - printed < 1.0, (seen - printed, log)
    assert not any(" second " in line for line in log)
    done = panel.tasks.wait(task["id"], 30)
    assert done["state"] == "succeeded" and done["result"]["exit_code"] == 0
    run = panel.store.get(RUNS, done["result"]["run"])
    assert run["state"] == "succeeded" and run["exit_code"] == 0
    assert [line.split()[0] for line in run["log"] if not line.startswith("panel:")] == \
        ["first", "second"]


@pytest.mark.slow
def test_parameters_arrive_intact_and_secrets_never_show(runner: dict, tmp_path: Path):
    panel = runner["panel"]
    pwned = tmp_path / "pwned"
    weird = f"a b'c\"d $(touch {pwned}) `touch {pwned}`;|&<>*?\\\nsecond line $HOME"
    secret = "Sup3r-S3cret-Value"
    body = ('printf "weird=%s\\n" "$(printf %s "$WEIRD" | base64 -w0)"\n'
            'echo "pass=$PASS"\necho "stderr too: $PASS" >&2\n'
            'echo "n=$N flag=$FLAG vm=$HVP_VM_ID recipe=$HVP_RECIPE"\necho vm-pw-4242\n')
    script = recipe("params", body=body, extra="param: WEIRD\nparam: PASS secret=yes\n"
                                                "param: N type=int\nparam: FLAG type=bool")
    task = start(runner, script, {"WEIRD": weird, "PASS": secret, "N": 7, "FLAG": False},
                 secrets=["vm-pw-4242"])
    done = panel.tasks.wait(task["id"], 30)
    assert done["state"] == "succeeded", done
    log = "\n".join(done["log"])
    assert f"weird={base64.b64encode(weird.encode()).decode()}" in log
    assert not pwned.exists()  # nothing was interpolated
    assert f"pass={SECRET_MASK}" in log and f"stderr too: {SECRET_MASK}" in log
    assert "n=7 flag=0 vm=vm1 recipe=params" in log and SECRET_MASK in log
    run = panel.store.get(RUNS, done["result"]["run"])
    assert run["params"]["PASS"] == SECRET_MASK and run["params"]["N"] == "7"
    everything = json.dumps([done, run, panel.store.all("events")])
    assert secret not in everything and "vm-pw-4242" not in everything


@pytest.mark.slow
def test_secrets_stay_out_of_the_api_answers(api: dict, guest: dict):
    admin, panel = api["admin"], api["panel"]
    vm = admin.run("POST", "/api/v1/vms", {"name": "runner",
                                           "vm_template": small_template(admin)["id"]})
    vm_id = vm["result"]["vm"]
    rec = admin.post("/api/v1/recipes", {"script": recipe(
        "secretive", body='echo "token=$TOKEN"\nexit 3\n', extra="param: TOKEN secret=yes")})
    me = admin.get("/api/v1/auth/me").body
    task = panel.recipes.run(guest["endpoint"], rec.body["id"], {"TOKEN": "tok-9f8e7d6c"},
                             me, vm_id)
    done = admin.wait_task(task["id"], 30)
    assert done["state"] == "failed" and done["error"]["code"] == "recipe_failed"
    runs = admin.get(f"/api/v1/vms/{vm_id}/recipe-runs").body["items"]
    assert runs[0]["exit_code"] == 3 and runs[0]["state"] == "failed"
    assert f"token={SECRET_MASK}" in runs[0]["log"]
    answers = json.dumps([admin.get(f"/api/v1/tasks/{task['id']}").body, runs,
                          admin.get("/api/v1/tasks").body, admin.get("/api/v1/events").body])
    assert "tok-9f8e7d6c" not in answers


@pytest.mark.slow
def test_a_non_zero_exit_fails_the_task_with_the_code(runner: dict):
    panel = runner["panel"]
    task = start(runner, recipe("fails", body="echo about to fail\nexit 7\n"))
    done = panel.tasks.wait(task["id"], 30)
    assert done["state"] == "failed" and done["error"]["code"] == "recipe_failed"
    assert "exited with code 7" in done["error"]["message"]
    run = panel.store.all(RUNS)[0]
    assert run["exit_code"] == 7 and run["state"] == "failed"
    assert "about to fail" in run["log"]


@pytest.mark.slow
def test_a_hanging_recipe_is_killed_at_its_timeout(runner: dict):
    panel = runner["panel"]
    started = time.monotonic()
    task = start(runner, recipe("hangs", body="echo started\nsleep 300 &\nsleep 300\n",
                                extra="timeout: 2"))
    done = panel.tasks.wait(task["id"], 60)
    assert done["state"] == "failed" and done["error"]["code"] == "recipe_timeout"
    assert "were killed" in done["error"]["message"]
    assert time.monotonic() - started < 20
    group = killed_group(done["log"])
    assert alive_in_group(group) == []
    run = panel.store.all(RUNS)[0]
    assert run["state"] == "failed" and run["error"]["code"] == "recipe_timeout"


@pytest.mark.slow
def test_cancelling_the_task_stops_the_recipe(runner: dict):
    panel = runner["panel"]
    task = start(runner, recipe("long", body="echo started\nsleep 300\n"))
    wait_for_line(panel, task["id"], "started")
    started = time.monotonic()
    panel.tasks.cancel(task["id"])
    done = panel.tasks.wait(task["id"], 30)
    assert done["state"] == "cancelled" and time.monotonic() - started < 10
    assert alive_in_group(killed_group(done["log"])) == []
    assert panel.store.all(RUNS)[0]["state"] == "cancelled"


@pytest.mark.slow
def test_a_wrong_pinned_host_key_is_refused(runner: dict, tmp_path: Path):
    panel, svc, endpoint = runner["panel"], runner["svc"], runner["endpoint"]
    _, other = make_client_key(tmp_path / "other")
    wrong = GuestEndpoint(endpoint.host, endpoint.port, endpoint.username,
                          endpoint.private_key_path, " ".join(other.read_text().split()[:2]))
    marker = tmp_path / "ran"
    rec = svc.add({"script": recipe("never", body=f"touch {marker}\n")}, ADMIN)
    done = panel.tasks.wait(svc.run(wrong, rec, {}, ADMIN, "vm1")["id"], 30)
    assert done["state"] == "failed" and done["error"]["code"] == "host_key_changed"
    assert "refusing to connect" in done["error"]["message"] and not marker.exists()


@pytest.mark.slow
def test_a_recipe_is_re_runnable_and_long_output_is_kept(runner: dict):
    panel = runner["panel"]
    svc = runner["svc"]
    rec = svc.add({"script": recipe("many", body="seq 1 3000\n")}, ADMIN)
    started = time.monotonic()
    for _ in range(2):
        task = svc.run(runner["endpoint"], rec, {}, ADMIN, "vm1")
        assert panel.tasks.wait(task["id"], 60)["state"] == "succeeded"
    assert time.monotonic() - started < 60
    runs = sorted(panel.store.find(RUNS, vm="vm1"), key=lambda r: r["created"], reverse=True)
    assert len(runs) == 2 and all(r["state"] == "succeeded" for r in runs)
    assert runs[0]["log"][-1] == "3000" and "earlier lines dropped" in runs[0]["log"][0]
