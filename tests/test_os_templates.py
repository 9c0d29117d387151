"""OS templates and repositories: index parsing, resumable verified downloads over HTTP and
FTP, image checks, compressed images, the API on the test driver, and imports into a dir
storage on the real libvirtd (slow).

Images are made here with ``qemu-img`` (a few MiB of virtual size). Repositories are
served by tests/support/servers.py: HTTP(S) in a thread, pyftpdlib as its own process.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypervisor_panel_plugins.os_templates import FolderSource, FtpSource, HttpSource

from hypervisor_panel import downloads as dl
from hypervisor_panel.errors import BadRequest, Invalid
from hypervisor_panel.os_templates import BadIndex, index_changes, parse_index
from tests.conftest import ADMIN_PASSWORD, node_uri_for
from tests.support.api import assert_error
from tests.support.client import Client
from tests.support.servers import FtpRepo, HttpRepo, free_port, self_signed

MIB = 1024 * 1024


# -- making images and repositories -------------------------------------------------------
def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                          check=True).stdout


def make_qcow2(path: Path, data: bytes) -> Path:
    """A qcow2 holding ``data`` (padded to whole MiB), converted from a raw file."""
    raw = path.with_suffix(".src")
    raw.write_bytes(data + b"\0" * (-len(data) % MIB))
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(path))
    raw.unlink()
    return path


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "zstd":
        return zstandard.ZstdCompressor(write_checksum=True).compress(data)
    return data


def entry(root: Path, rel: str, content: bytes, **meta: Any) -> dict[str, Any]:
    """Write ``content`` at ``root/rel``; its index entry."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return {"name": Path(rel).name.split(".")[0], "os_family": "testos", "os_version": "1",
            "file": rel, "sha256": hashlib.sha256(content).hexdigest(), "size": len(content),
            **meta}


def write_index(root: Path, entries: list[dict[str, Any]]) -> None:
    (root / "index.json").write_text(json.dumps({"version": 1, "templates": entries}))


def fake_iso(label: bytes = b"HVP") -> bytes:
    """Enough of an ISO 9660 image for the check (a primary volume descriptor)."""
    return b"\0" * 0x8000 + b"\x01CD001\x01\0" + label.ljust(32) + b"\0" * (64 * 1024)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Raw and qcow2 contents used across the tests, and their compressed forms."""
    raw = os.urandom(MIB) + b"\0" * MIB + os.urandom(MIB // 2)
    base = tmp_path_factory.mktemp("images") / "base.qcow2"
    qcow2 = make_qcow2(base, os.urandom(2 * MIB)).read_bytes()
    return {"raw": raw, "qcow2": qcow2, "raw.gzip": compress(raw, "gzip"),
            **{f"qcow2.{kind}": compress(qcow2, kind) for kind in ("gzip", "xz", "zstd")}}


@pytest.fixture
def repo(tmp_path: Path, images: dict[str, bytes]) -> dict[str, Any]:
    """A repository folder: good images (plain and compressed), a truncated and a corrupt
    qcow2 (honestly hashed: the repository itself serves them broken)."""
    root = tmp_path / "repo"
    good = images["qcow2"]
    corrupt = bytearray(good)
    corrupt[0x30:0x38] = b"\xff" * 8  # the refcount table offset
    entries = [
        entry(root, "images/tiny-qcow2.qcow2.xz", images["qcow2.xz"], format="qcow2",
              compression="xz", uncompressed_size=len(good), min_disk_gib=1,
              default_user="tester", tags=["small"], description="xz qcow2"),
        entry(root, "images/tiny-raw.img.gz", images["raw.gzip"], format="raw",
              compression="gzip"),
        entry(root, "images/tiny-zstd.qcow2.zst", images["qcow2.zstd"], format="qcow2",
              compression="zstd"),
        entry(root, "iso/installer.iso", fake_iso(), format="iso", config="none"),
        entry(root, "images/truncated.qcow2", good[: len(good) // 2], format="qcow2"),
        entry(root, "images/corrupt.qcow2", bytes(corrupt), format="qcow2"),
        entry(root, "images/scripted.img", images["raw"], format="raw", config="script",
              script="#!/bin/sh\necho configured\n"),
    ]
    write_index(root, entries)
    return {"root": root, "entries": {e["name"]: e for e in entries}}


# -- index parsing --------------------------------------------------------------------------
GOOD = {"name": "debian-12", "os_family": "debian", "format": "qcow2", "file": "d.qcow2",
        "sha256": "a" * 64, "size": 10}


def index(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"version": 1, "templates": list(entries)}).encode()


def test_a_good_index_parses_with_defaults():
    iso = {**GOOD, "name": "installer", "format": "iso", "file": "sub/dir/i.iso"}
    parsed = parse_index(index(GOOD, iso))
    assert [e["name"] for e in parsed] == ["debian-12", "installer"]
    assert parsed[0]["kind"] == "image" and parsed[1]["kind"] == "iso"
    assert parsed[0]["compression"] == "none" and parsed[0]["config"] == "cloud-init"
    assert parsed[0]["arch"] == "x86_64" and parsed[0]["min_memory_mib"] == 256


@pytest.mark.parametrize("data, code", [
    (b"{not json", "bad_index"),
    (b"\xff\xfe", "bad_index"),
    (b"[]", "bad_index"),
    (json.dumps({"templates": [{"name": "x"}]}).encode(), "bad_index"),
    (index({**GOOD, "sha256": "XYZ"}), "bad_index"),
    (index({**GOOD, "format": "vmdk"}), "bad_index"),
    (index({**GOOD, "config": "script"}), "bad_index"),  # a script config needs a script
    (index({**GOOD, "format": "iso", "kind": "image"}), "bad_index"),
    (index(GOOD, GOOD), "bad_index"),  # a name twice
    (index({**GOOD, "name": "../etc"}), "bad_index"),
    (index({**GOOD, "name": "a/b"}), "bad_index"),
    (index({**GOOD, "name": "a\\b"}), "bad_index"),
    (index({**GOOD, "file": "../../etc/passwd"}), "unsafe_path"),
    (index({**GOOD, "file": "/etc/passwd"}), "unsafe_path"),
    (index({**GOOD, "file": "images/../../x"}), "unsafe_path"),
    (index({**GOOD, "file": "images\\x.img"}), "unsafe_path"),
    (index({**GOOD, "file": "C:/x.img"}), "unsafe_path"),
    (index({**GOOD, "file": "a//b"}), "unsafe_path"),
    (index({**GOOD, "file": "./x"}), "unsafe_path"),
    (index({**GOOD, "file": "x.img\r\nDELE index.json"}), "unsafe_path"),  # FTP injection
    (b" " * (5 * MIB), "bad_index"),
])
def test_a_broken_or_malicious_index_is_refused(data: bytes, code: str):
    with pytest.raises(BadIndex) as caught:
        parse_index(data, "test index")
    assert caught.value.code == code and caught.value.status == 422
    assert caught.value.message


def test_index_changes_name_what_changed():
    old = parse_index(index(GOOD, {**GOOD, "name": "gone"}, {**GOOD, "name": "same"}))
    new = parse_index(index({**GOOD, "sha256": "b" * 64}, {**GOOD, "name": "same"},
                            {**GOOD, "name": "new"}))
    assert index_changes(old, new) == {"added": ["new"], "changed": ["debian-12"],
                                       "removed": ["gone"], "unchanged": 1}


def test_the_folder_source_refuses_a_link_out_of_the_repository(tmp_path: Path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "escape.img").symlink_to("/etc/hostname")
    (tmp_path / "outside.img").write_bytes(b"x")
    (root / "sub").symlink_to(tmp_path)
    source = FolderSource()
    for rel in ("escape.img", "sub/outside.img"):
        with pytest.raises(BadIndex) as caught:
            source.open({"path": str(root)}, {**GOOD, "file": rel}, 0)
        assert caught.value.code == "unsafe_path"


# -- downloads ---------------------------------------------------------------------------
def opener(source: Any, options: dict[str, Any], item: dict[str, Any]):
    return lambda offset: source.open(options, item, offset)


def test_http_download_cut_in_the_middle_resumes_with_range(repo: dict[str, Any],
                                                            tmp_path: Path):
    item = repo["entries"]["tiny-raw"]
    seen: list[int] = []
    with HttpRepo(repo["root"]) as server:
        options = {"url": server.url(), "timeout": 5}
        server.drop_after[item["file"]] = 300_000
        path = dl.download(opener(HttpSource(), options, item), tmp_path / "dl", item["sha256"],
                           item["size"], progress=lambda done, total: seen.append(done),
                           delay=0.01)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"]
    assert (item["file"], "bytes=300000-") in server.requests  # resumed from the cut
    assert seen == sorted(seen) and seen[-1] == item["size"]
    assert not (tmp_path / "dl.part").exists()


def test_a_download_resumes_a_part_left_by_an_earlier_attempt(repo: dict[str, Any],
                                                              tmp_path: Path):
    item = repo["entries"]["tiny-raw"]
    with HttpRepo(repo["root"]) as server:
        options = {"url": server.url(), "timeout": 5}
        open_at = opener(HttpSource(), options, item)
        server.drop_after[item["file"]] = 200_000
        with pytest.raises(dl.DownloadFailed) as caught:
            dl.download(open_at, tmp_path / "dl", item["sha256"], item["size"], retries=0)
        assert "import again to resume" in caught.value.message
        assert (tmp_path / "dl.part").stat().st_size == 200_000  # kept for the next try
        server.ignore_range = True  # and a server that ignores Range: the source skips
        path = dl.download(open_at, tmp_path / "dl", item["sha256"], item["size"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"]
    assert server.requests[-1] == (item["file"], "bytes=200000-")


def test_a_checksum_mismatch_keeps_nothing(repo: dict[str, Any], tmp_path: Path):
    item = repo["entries"]["tiny-raw"]
    with HttpRepo(repo["root"]) as server:
        open_at = opener(HttpSource(), {"url": server.url()}, item)
        with pytest.raises(dl.ChecksumMismatch) as caught:
            dl.download(open_at, tmp_path / "dl", "0" * 64, item["size"])
        assert caught.value.status == 422 and "nothing was kept" in caught.value.message
        with pytest.raises(Invalid) as caught:
            dl.download(open_at, tmp_path / "dl", item["sha256"], item["size"] + 1)
        assert caught.value.code == "size_mismatch"
    assert list(tmp_path.glob("dl*")) == []


def test_a_cancelled_download_removes_its_part(repo: dict[str, Any], tmp_path: Path):
    item = repo["entries"]["tiny-raw"]

    def check() -> None:
        if (tmp_path / "dl.part").stat().st_size >= MIB:
            raise KeyboardInterrupt  # stands for TaskCancelled

    with pytest.raises(KeyboardInterrupt):
        dl.download(opener(FolderSource(), {"path": str(repo["root"])}, item),
                    tmp_path / "dl", item["sha256"], item["size"], check=check)
    assert list(tmp_path.glob("dl*")) == []


def test_receive_refuses_a_short_or_wrong_upload(tmp_path: Path):
    data = os.urandom(3 * MIB)
    digest = hashlib.sha256(data).hexdigest()
    assert dl.receive(io.BytesIO(data), tmp_path / "u", len(data), digest) == digest
    with pytest.raises(BadRequest) as caught:
        dl.receive(io.BytesIO(data[:1000]), tmp_path / "v", len(data))
    assert caught.value.code == "short_upload" and not (tmp_path / "v").exists()
    with pytest.raises(dl.ChecksumMismatch):
        dl.receive(io.BytesIO(data), tmp_path / "w", len(data), "1" * 64)
    assert not (tmp_path / "w").exists()


@pytest.mark.slow  # a real FTP server, killed in the middle of a transfer
def test_ftp_download_cut_by_a_killed_server_resumes_with_rest(tmp_path: Path):
    root = tmp_path / "ftp"
    item = entry(root, "big.img", os.urandom(6 * MIB), format="raw")
    write_index(root, [item])
    with FtpRepo(root, tmp_path / "ftp.log", rate=MIB) as server:
        options = {"url": server.url(), "timeout": 5}
        assert FtpSource().read_index(options)[0]["sha256"] == item["sha256"]
        part = tmp_path / "dl.part"

        def kill_and_restart() -> None:
            while not part.exists() or part.stat().st_size < 2 * MIB:
                time.sleep(0.01)
            server.kill()
            server.start()

        killer = threading.Thread(target=kill_and_restart)
        killer.start()
        path = dl.download(opener(FtpSource(), options, item), tmp_path / "dl",
                           item["sha256"], item["size"], retries=20, delay=0.2)
        killer.join()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"]
        rests = [int(line.split("REST ")[1].split()[0]) for line in server.log().splitlines()
                 if "REST " in line]
        assert rests and 2 * MIB <= rests[-1] < item["size"]

        # A server that stays away: the attempt fails, the part stays; the next resumes.
        path.unlink()
        threading.Thread(target=lambda: (time.sleep(1.5), server.kill())).start()
        with pytest.raises(dl.DownloadFailed):
            dl.download(opener(FtpSource(), options, item), tmp_path / "dl",
                        item["sha256"], item["size"], retries=1, delay=0.1)
        kept = part.stat().st_size
        assert 0 < kept < item["size"]
        server.start()
        path = dl.download(opener(FtpSource(), options, item), tmp_path / "dl",
                           item["sha256"], item["size"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == item["sha256"]
        assert f"REST {kept} " in server.log()


# -- image checks and decompression -------------------------------------------------------
def test_truncated_and_corrupt_images_are_refused(repo: dict[str, Any], tmp_path: Path,
                                                   images: dict[str, bytes]):
    root = repo["root"]
    for rel in ("images/truncated.qcow2", "images/corrupt.qcow2"):
        with pytest.raises(dl.CorruptImage) as caught:
            dl.inspect_image(root / rel, "qcow2")
        assert caught.value.code == "corrupt_image", caught.value.message
    (tmp_path / "good.qcow2").write_bytes(images["qcow2"])
    info = dl.inspect_image(tmp_path / "good.qcow2", "qcow2")
    assert info.format == "qcow2" and info.virtual_size == 2 * MIB
    (tmp_path / "raw.img").write_bytes(images["raw"])
    for path, fmt in ((tmp_path / "raw.img", "qcow2"), (tmp_path / "good.qcow2", "raw"),
                      (tmp_path / "raw.img", "iso")):
        with pytest.raises(dl.CorruptImage) as caught:
            dl.inspect_image(path, fmt)
        assert caught.value.code == "format_mismatch"
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", "/etc/hostname",
             str(tmp_path / "backed.qcow2"))
    with pytest.raises(dl.CorruptImage) as caught:
        dl.inspect_image(tmp_path / "backed.qcow2", "qcow2")
    assert caught.value.code == "unsafe_image"
    (tmp_path / "x.iso").write_bytes(fake_iso())
    assert dl.inspect_image(tmp_path / "x.iso", "iso").format == "iso"


@pytest.mark.parametrize("kind", ["gzip", "xz", "zstd"])
def test_compressed_images_unpack_and_damage_is_refused(kind: str, tmp_path: Path,
                                                        images: dict[str, bytes]):
    data = images["qcow2"]
    packed = images[f"qcow2.{kind}"]
    src = tmp_path / "src"
    src.write_bytes(packed)
    out = dl.decompress(src, tmp_path / "out", kind, limit=1 << 30, expected=len(data))
    assert out.read_bytes() == data
    for broken, code in ((packed[: len(packed) // 2], "corrupt_image"),
                         (packed[:200] + bytes(64) + packed[264:], "corrupt_image")):
        src.write_bytes(broken)
        with pytest.raises(dl.CorruptImage) as caught:
            dl.decompress(src, tmp_path / "out", kind, limit=1 << 30)
        assert caught.value.code == code
    src.write_bytes(packed)
    with pytest.raises(dl.CorruptImage) as caught:  # a bomb: more than the limit
        dl.decompress(src, tmp_path / "out", kind, limit=MIB)
    assert caught.value.code == "too_large"
    with pytest.raises(dl.CorruptImage) as caught:
        dl.decompress(src, tmp_path / "out", kind, limit=1 << 30, expected=len(data) + 1)
    assert caught.value.code == "size_mismatch"
    assert not (tmp_path / "out").exists()


# -- a panel with the OS template service ---------------------------------------------------
@contextmanager
def template_panel(data_dir: Path, uri: str, storage_path: str | None = None
                   ) -> Iterator[tuple[Any, Client]]:
    """A served panel with the OS template service and routes (wired here until the
    composition root does it)."""
    import hypervisor_panel_plugins.os_templates as plugin

    from hypervisor_panel.api.os_templates import declare
    from hypervisor_panel.os_template_service import OSTemplateService
    from hypervisor_panel.panel import Panel
    from hypervisor_panel.plugins import get_plugin_manager
    from hypervisor_panel.routes import RouteTable
    from hypervisor_panel.web.app import create_app
    from hypervisor_panel.web.server import serve_in_thread

    pm = get_plugin_manager()
    if not pm.has_plugin("os_templates"):
        pm.register(plugin, name="os_templates")
    panel = Panel(data_dir, pm=pm, local_uri=uri, default_storage_path=storage_path)
    if not hasattr(panel, "os_templates"):
        panel.os_templates = OSTemplateService(  # type: ignore[attr-defined]
            panel.store, panel.tasks, panel.events, panel.references, panel.storages,
            panel.nodes, panel.registry.os_template_sources, panel.data_dir)
    panel.os_templates.retries, panel.os_templates.retry_delay = 2, 0.05
    panel.start(admin_password=ADMIN_PASSWORD)
    if not any(r.path == "/os-templates" for r in panel.routes):
        table = RouteTable()
        declare(table, panel)
        panel.routes.extend(table)
    server, port = serve_in_thread(create_app(panel))
    try:
        yield panel, Client(f"http://127.0.0.1:{port}").login("admin", ADMIN_PASSWORD)
    finally:
        server.stop()
        panel.close()


@pytest.fixture
def fast(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The test-driver panel (its dir storage holds volumes but refuses uploads)."""
    with template_panel(tmp_path / "data", node_uri_for(tmp_path),
                        str(tmp_path / "images")) as (panel, admin):
        storage = admin.get("/api/v1/storages").body["items"][0]
        yield {"panel": panel, "admin": admin, "storage": storage}


def work_files(panel: Any) -> list[str]:
    root = panel.data_dir / "os-templates"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_repositories_through_the_api(fast: dict[str, Any], repo: dict[str, Any],
                                      tmp_path: Path):
    admin: Client = fast["admin"]
    sources = admin.get("/api/v1/os-template-sources").body["items"]
    assert {s["name"] for s in sources} >= {"folder", "http", "ftp"}
    added = admin.post("/api/v1/os-template-repos", {
        "name": "local", "source": "folder", "options": {"path": str(repo["root"])}})
    assert added.status == 201 and added.body["templates"] == len(repo["entries"])
    one = admin.get(f"/api/v1/os-template-repos/{added.body['id']}").body
    assert {e["name"] for e in one["entries"]} == set(repo["entries"])
    listing = admin.get("/api/v1/os-templates").body
    assert listing["items"] == [] and len(listing["available"]) == len(repo["entries"])
    assert all(not a["imported"] for a in listing["available"])
    assert_error(admin.post("/api/v1/os-template-repos", {
        "name": "local", "source": "folder", "options": {"path": str(repo["root"])}}), 409,
        "already_exists")

    # Changed entry: the refresh task says so and the catalog has the new checksum.
    changed = entry(repo["root"], "images/tiny-raw.img.gz", compress(b"new" * 1000, "gzip"),
                    format="raw", compression="gzip")
    write_index(repo["root"], [changed if e["name"] == "tiny-raw" else e
                               for e in repo["entries"].values() if e["name"] != "corrupt"]
                + [entry(repo["root"], "new-one.img", b"\0" * 512, format="raw")])
    task = admin.post(f"/api/v1/os-template-repos/{added.body['id']}/actions/refresh", {})
    assert task.status == 202
    result = admin.wait_task(task.body["task"]["id"])
    assert result["state"] == "succeeded", result
    assert result["result"] == {"added": ["new-one"], "changed": ["tiny-raw"],
                                "removed": ["corrupt"], "unchanged": len(repo["entries"]) - 2}
    available = {a["name"]: a for a in admin.get("/api/v1/os-templates").body["available"]}
    assert available["tiny-raw"]["sha256"] == changed["sha256"] and "corrupt" not in available

    # A broken index on refresh: the task fails with the reason, the catalog stays.
    (repo["root"] / "index.json").write_text("{broken")
    failed = admin.wait_task(admin.post(
        f"/api/v1/os-template-repos/{added.body['id']}/actions/refresh", {}).body["task"]["id"])
    assert failed["state"] == "failed" and failed["error"]["code"] == "bad_index"
    assert admin.get(f"/api/v1/os-template-repos/{added.body['id']}").body["templates"] == \
        len(available)
    assert admin.delete(f"/api/v1/os-template-repos/{added.body['id']}").status == 204
    assert admin.get("/api/v1/os-template-repos").body["items"] == []


def test_a_broken_or_unreachable_repository_is_refused_at_once(fast: dict[str, Any],
                                                               tmp_path: Path):
    admin: Client = fast["admin"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.json").write_text('{"version": 1, "templates": [{"name": "x"}]}')
    evil = tmp_path / "evil"
    evil.mkdir()
    write_index(evil, [{**GOOD, "file": "../../../etc/shadow"}])
    closed = free_port()
    cases = [
        ({"source": "folder", "options": {"path": str(broken)}}, 422, "bad_index"),
        ({"source": "folder", "options": {"path": str(evil)}}, 422, "unsafe_path"),
        ({"source": "folder", "options": {"path": str(tmp_path / "none")}}, 503,
         "repository_unreachable"),
        ({"source": "http", "options": {"url": f"http://127.0.0.1:{closed}/index.json",
                                        "timeout": 2}}, 503, "repository_unreachable"),
        ({"source": "ftp", "options": {"url": f"ftp://127.0.0.1:{closed}/index.json",
                                       "timeout": 2}}, 503, "repository_unreachable"),
        ({"source": "http", "options": {"url": "file:///etc/passwd"}}, 422, None),
        ({"source": "folder", "options": {"path": "relative/path"}}, 422, None),
        ({"source": "folder", "options": {}}, 422, None),
        ({"source": "nope", "options": {}}, 422, None),
    ]
    for number, (body, status, code) in enumerate(cases):
        started = time.monotonic()
        resp = admin.post("/api/v1/os-template-repos", {"name": f"r{number}", **body})
        assert_error(resp, status, code)
        assert time.monotonic() - started < 5, body
    for name in ("a/b", "../x", ""):
        assert_error(admin.post("/api/v1/os-template-repos", {
            "name": name, "source": "folder", "options": {"path": str(broken)}}), 422)
    assert admin.get("/api/v1/os-template-repos").body["items"] == []


def test_https_repositories_verify_the_certificate(fast: dict[str, Any], repo: dict[str, Any],
                                                   tmp_path: Path):
    admin: Client = fast["admin"]
    cert, key = self_signed(tmp_path)
    with HttpRepo(repo["root"], tls=(cert, key)) as server:
        refused = admin.post("/api/v1/os-template-repos", {
            "name": "tls", "source": "http", "options": {"url": server.url(), "timeout": 5}})
        assert_error(refused, 503, "repository_unreachable")
        assert "certificate verify failed" in refused.body["error"]["message"]
        trusted = admin.post("/api/v1/os-template-repos", {
            "name": "tls", "source": "http",
            "options": {"url": server.url(), "ca_file": str(cert), "timeout": 5}})
        assert trusted.status == 201, trusted


@pytest.mark.slow  # a real FTP server (and its 3 s delay after a wrong password)
def test_ftp_passwords_are_never_returned(fast: dict[str, Any], repo: dict[str, Any],
                                          tmp_path: Path):
    admin: Client = fast["admin"]
    with FtpRepo(repo["root"], tmp_path / "ftp.log", user="mirror",
                 password="s3cret-pw") as server:
        added = admin.post("/api/v1/os-template-repos", {
            "name": "ftp", "source": "ftp", "options": {
                "url": server.url(), "username": "mirror", "password": "s3cret-pw"}})
        assert added.status == 201, added
        wrong = admin.post("/api/v1/os-template-repos", {
            "name": "ftp2", "source": "ftp", "options": {
                "url": server.url(), "username": "mirror", "password": "wrong"}})
        assert_error(wrong, 503, "repository_unreachable")
    for view in (added.body, admin.get(f"/api/v1/os-template-repos/{added.body['id']}").body,
                 *admin.get("/api/v1/os-template-repos").body["items"]):
        assert "password" not in view["options"] and "s3cret" not in json.dumps(view)


def test_a_failed_import_leaves_no_volume_and_no_files(fast: dict[str, Any],
                                                       repo: dict[str, Any]):
    """On the test driver the upload into the volume fails (it has no volume upload):
    the last step of the import; the volume it had made goes, the record says why."""
    admin, panel, storage = fast["admin"], fast["panel"], fast["storage"]
    added = admin.post("/api/v1/os-template-repos", {
        "name": "local", "source": "folder", "options": {"path": str(repo["root"])}}).body
    for name, code in (("tiny-qcow2", "storage_error"), ("truncated", "corrupt_image"),
                       ("corrupt", "corrupt_image")):
        resp = admin.post("/api/v1/os-templates", {"repo": added["id"], "entry": name,
                                                   "storage": storage["id"]})
        assert resp.status == 202, resp
        task = admin.wait_task(resp.body["task"]["id"])
        assert task["state"] == "failed" and task["error"]["code"] == code, task
        record = next(t for t in admin.get("/api/v1/os-templates").body["items"]
                      if t["name"] == name)
        assert record["state"] == "failed" and record["error"]["code"] == code
        assert record["volume"] is None
    volumes = admin.get(f"/api/v1/storages/{storage['id']}/volumes").body["items"]
    assert not [v for v in volumes if v["name"].startswith("ost-")]
    assert work_files(panel) == []
    bad = [({"repo": added["id"], "entry": "missing", "storage": storage["id"]}, 404),
           ({"repo": "nope", "entry": "tiny-raw", "storage": storage["id"]}, 404),
           ({"repo": added["id"], "entry": "tiny-raw", "storage": "nope"}, 404),
           ({"repo": added["id"], "entry": "../tiny-raw", "storage": storage["id"]}, 422),
           ({"repo": added["id"], "entry": "tiny-raw", "storage": storage["id"],
             "name": "a/b"}, 422)]
    for body, status in bad:
        assert_error(admin.post("/api/v1/os-templates", body), status)


def test_a_cancelled_import_keeps_nothing(fast: dict[str, Any], repo: dict[str, Any]):
    admin, panel = fast["admin"], fast["panel"]
    with HttpRepo(repo["root"]) as server:
        server.chunk_delay = 0.05
        repo_id = admin.post("/api/v1/os-template-repos", {
            "name": "slow", "source": "http", "options": {"url": server.url()}}).body["id"]
        task = admin.post("/api/v1/os-templates", {"repo": repo_id, "entry": "tiny-raw",
                                                   "storage": fast["storage"]["id"]}).body
        deadline = time.monotonic() + 10
        while not list((panel.data_dir / "os-templates" / "cache").glob("*.part")):
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.02)
        assert admin.post(f"/api/v1/tasks/{task['task']['id']}/actions/cancel").status == 200
        final = admin.wait_task(task["task"]["id"], timeout=20)
    assert final["state"] == "cancelled", final
    record = admin.get("/api/v1/os-templates").body["items"][0]
    assert record["state"] == "failed" and record["error"]["code"] == "cancelled"
    assert work_files(panel) == []


def test_upload_steps_and_bad_uploads(fast: dict[str, Any], images: dict[str, bytes]):
    admin, panel, storage = fast["admin"], fast["panel"], fast["storage"]
    data = images["qcow2"]
    meta = {"name": "uploaded", "os_family": "testos", "format": "qcow2",
            "storage": storage["id"], "sha256": hashlib.sha256(data).hexdigest()}
    for bad in ({**meta, "name": "../up"}, {**meta, "name": "a/b"}, {**meta, "format": "vmdk"},
                {**meta, "storage": "nope"}, {k: v for k, v in meta.items() if k != "storage"}):
        assert admin.post("/api/v1/os-templates/uploads", bad).status in (404, 422), bad
    made = admin.post("/api/v1/os-templates/uploads", meta)
    assert made.status == 201 and made.body["state"] == "uploading", made
    url = f"/api/v1/os-templates/{made.body['id']}/content"
    headers = {"Content-Type": "application/octet-stream"}
    wrong = admin.request("PUT", url, raw=data[:-1] + b"x", headers=headers)
    assert_error(wrong, 422, "checksum_mismatch")
    assert admin.get(f"/api/v1/os-templates/{made.body['id']}").body["state"] == "uploading"
    assert work_files(panel) == []
    assert_error(admin.post("/api/v1/os-templates/uploads", meta), 409, "already_exists")
    task = admin.request("PUT", url, raw=data, headers=headers)
    assert task.status == 202, task
    final = admin.wait_task(task.body["task"]["id"])
    assert final["state"] == "failed" and final["error"]["code"] == "storage_error"  # test driver
    assert_error(admin.request("PUT", url, raw=data, headers=headers), 409, "not_uploading")
    assert work_files(panel) == []


def test_delete_is_refused_while_a_vm_uses_the_template(fast: dict[str, Any]):
    admin, panel = fast["admin"], fast["panel"]
    made = admin.post("/api/v1/os-templates/uploads", {
        "name": "in-use", "os_family": "testos", "format": "raw",
        "storage": fast["storage"]["id"]}).body
    users = {made["id"]: ["web1", "web2"]}
    panel.references.register("os_template", lambda tid: users.get(tid, []), "VM")
    busy = admin.delete(f"/api/v1/os-templates/{made['id']}")
    assert_error(busy, 409, "os_template_in_use")
    assert "VM web1" in busy.body["error"]["message"]
    users.clear()
    assert admin.delete(f"/api/v1/os-templates/{made['id']}").status == 204
    assert_error(admin.delete(f"/api/v1/os-templates/{made['id']}"), 404)


def test_users_see_ready_templates_only_and_change_nothing(fast: dict[str, Any],
                                                           repo: dict[str, Any]):
    admin: Client = fast["admin"]
    admin.post("/api/v1/os-templates/uploads", {"name": "waiting", "os_family": "testos",
                                                "format": "raw",
                                                "storage": fast["storage"]["id"]})
    assert admin.post("/api/v1/users", {"name": "bob", "password": "bob-password-1"}).status \
        == 201
    bob = Client(admin.base).login("bob", "bob-password-1")
    assert bob.get("/api/v1/os-templates").body == {"items": []}
    waiting = admin.get("/api/v1/os-templates").body["items"][0]
    assert_error(bob.get(f"/api/v1/os-templates/{waiting['id']}"), 404)
    for method, path, body in (
            ("POST", "/api/v1/os-template-repos", {"name": "x", "source": "folder",
                                                   "options": {"path": str(repo["root"])}}),
            ("GET", "/api/v1/os-template-repos", None)):
        assert_error(bob.request(method, path, body), 403, "admin_only")
    # Uploads need the upload_isos permission (tests/test_quotas.py); an admin's template
    # is no user's to delete.
    assert_error(bob.post("/api/v1/os-templates/uploads", {
        "name": "mine", "os_family": "testos", "format": "iso", "kind": "iso",
        "storage": fast["storage"]["id"]}), 403, "permission_required")
    assert_error(bob.delete(f"/api/v1/os-templates/{waiting['id']}"), 404)
    assert [t["name"] for t in admin.get("/api/v1/os-templates").body["items"]] == ["waiting"]


def test_the_routes_are_in_the_openapi_document(fast: dict[str, Any]):
    paths = fast["admin"].get("/api/v1/openapi.json").body["paths"]
    for path in ("/os-templates", "/os-templates/{os_template_id}", "/os-templates/uploads",
                 "/os-templates/{os_template_id}/content", "/os-template-repos",
                 "/os-template-repos/{repo_id}", "/os-template-repos/{repo_id}/actions/refresh",
                 "/os-template-sources"):
        assert any(p.endswith(path) for p in paths), path


# -- the real libvirtd ------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.support.realvirt import ensure_libvirtd

    uri = ensure_libvirtd()
    tag = uuid.uuid4().hex[:6]
    path = Path(f"/var/lib/libvirt/images/hvp-ost-{tag}")
    with template_panel(tmp_path_factory.mktemp("ost") / "data", uri) as (panel, admin):
        storage = admin.post("/api/v1/storages", {"name": f"ost-{tag}", "backend": "dir",
                                                  "options": {"path": str(path)}})
        assert storage.status == 201, storage
        try:
            yield {"panel": panel, "admin": admin, "storage": storage.body, "path": path}
        finally:
            for template in admin.get("/api/v1/os-templates").body["items"]:
                admin.delete(f"/api/v1/os-templates/{template['id']}")
            base = f"/api/v1/storages/{storage.body['id']}/volumes"
            for vol in admin.get(base).body["items"]:
                admin.delete(f"{base}/{vol['name']}")
            assert admin.delete(f"/api/v1/storages/{storage.body['id']}").status == 204
            subprocess.run(["rm", "-rf", str(path)], check=False)


def run_import(admin: Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = admin.post("/api/v1/os-templates", body)
    assert resp.status == 202, resp
    return admin.wait_task(resp.body["task"]["id"])


@pytest.mark.slow  # the real libvirtd
def test_imports_into_a_dir_storage_on_the_real_libvirtd(real: dict[str, Any],
                                                         repo: dict[str, Any],
                                                         images: dict[str, bytes],
                                                         tmp_path: Path):
    admin, storage, pool = real["admin"], real["storage"], real["path"]
    with HttpRepo(repo["root"]) as server:
        repo_id = admin.post("/api/v1/os-template-repos", {
            "name": "http", "source": "http", "options": {"url": server.url()}}).body["id"]
        server.drop_after["images/tiny-qcow2.qcow2.xz"] = 50_000  # resumed within the task
        done = {name: run_import(admin, {"repo": repo_id, "entry": name,
                                         "storage": storage["id"]})
                for name in ("tiny-qcow2", "tiny-raw", "tiny-zstd", "installer", "scripted",
                             "truncated", "corrupt")}
    qcow2 = done["tiny-qcow2"]
    assert qcow2["state"] == "succeeded", qcow2
    assert ("images/tiny-qcow2.qcow2.xz", "bytes=50000-") in server.requests  # resumed
    assert qcow2["progress"] == 100 and any("downloaded" in line for line in qcow2["log"])
    assert any("unpacked" in line for line in qcow2["log"])
    assert any("uploaded" in line for line in qcow2["log"])
    record = qcow2["result"]
    assert record["state"] == "ready" and record["format"] == "qcow2"
    assert record["virtual_size"] == 2 * MIB and record["default_user"] == "tester"
    assert record["storage"] == storage["id"] and record["volume"].endswith(".qcow2")
    info = json.loads(qemu_img("info", "-U", "--output=json", str(pool / record["volume"])))
    assert info["format"] == "qcow2" and info["virtual-size"] == 2 * MIB
    assert (pool / record["volume"]).read_bytes() == images["qcow2"]
    raw = done["tiny-raw"]["result"]
    assert raw["format"] == "raw" and (pool / raw["volume"]).read_bytes() == images["raw"]
    assert done["tiny-zstd"]["result"]["format"] == "qcow2"
    iso = done["installer"]["result"]
    assert iso["kind"] == "iso" and iso["volume"].endswith(".iso")
    assert done["scripted"]["result"]["script"].startswith("#!/bin/sh")
    for name in ("truncated", "corrupt"):
        assert done[name]["state"] == "failed"
        assert done[name]["error"]["code"] == "corrupt_image", done[name]
    names = {v["name"] for v in admin.get(
        f"/api/v1/storages/{storage['id']}/volumes").body["items"]}
    assert not [n for n in names if "truncated" in n or "corrupt" in n]
    assert work_files(real["panel"]) == []

    # The volume is the template's: deleting it directly, or the storage, is refused.
    volume_url = f"/api/v1/storages/{storage['id']}/volumes/{raw['volume']}"
    assert_error(admin.delete(volume_url), 409, "volume_in_use")
    assert_error(admin.delete(f"/api/v1/storages/{storage['id']}"), 409, "storage_in_use")

    # Users see it ready, without internals; an import of the same name is refused.
    admin.post("/api/v1/users", {"name": "carol", "password": "carol-password-1"})
    carol = Client(admin.base).login("carol", "carol-password-1")
    seen = {t["name"]: t for t in carol.get("/api/v1/os-templates").body["items"]}
    assert set(seen) == {"tiny-qcow2", "tiny-raw", "tiny-zstd", "installer", "scripted"}
    assert "script" not in seen["scripted"] and "error" not in seen["tiny-raw"]
    assert_error(admin.post("/api/v1/os-templates", {"repo": repo_id, "entry": "tiny-raw",
                                                     "storage": storage["id"]}), 409,
                 "already_exists")

    # Delete: refused while a VM uses it, then the volume goes with the template.
    users: dict[str, list[str]] = {raw["id"]: ["vm-a"]}
    real["panel"].references.register("os_template", lambda tid: users.get(tid, []), "VM")
    assert_error(admin.delete(f"/api/v1/os-templates/{raw['id']}"), 409, "os_template_in_use")
    assert (pool / raw["volume"]).exists()
    users.clear()
    assert admin.delete(f"/api/v1/os-templates/{raw['id']}").status == 204
    assert not (pool / raw["volume"]).exists()


@pytest.mark.slow  # the real libvirtd and a real FTP server
def test_refresh_update_upload_and_ftp_import_on_the_real_libvirtd(
        real: dict[str, Any], repo: dict[str, Any], images: dict[str, bytes],
        tmp_path: Path):
    admin, storage, pool = real["admin"], real["storage"], real["path"]
    root = repo["root"]
    with FtpRepo(root, tmp_path / "ftp.log") as server:
        repo_id = admin.post("/api/v1/os-template-repos", {
            "name": "ftp", "source": "ftp", "options": {"url": server.url()}}).body["id"]
        first = run_import(admin, {"repo": repo_id, "entry": "tiny-raw", "name": "ftp-raw",
                                   "storage": storage["id"]})
        assert first["state"] == "succeeded", first
        old = first["result"]
        assert (pool / old["volume"]).read_bytes() == images["raw"]

        # The entry changes: refresh with update fetches it and swaps the volume.
        new_raw = os.urandom(MIB)
        changed = entry(root, "images/tiny-raw.img.gz", compress(new_raw, "gzip"),
                        format="raw", compression="gzip")
        write_index(root, [changed if e["name"] == "tiny-raw" else e
                           for e in repo["entries"].values()])
        listing = admin.get("/api/v1/os-templates").body
        assert not next(a for a in listing["available"]
                        if a["entry"] == "tiny-raw")["update_available"]
        task = admin.wait_task(admin.post(f"/api/v1/os-template-repos/{repo_id}/actions/"
                                          "refresh", {"update": True}).body["task"]["id"])
        assert task["state"] == "succeeded", task
        assert task["result"]["changed"] == ["tiny-raw"]
        assert task["result"]["updated"] == ["ftp-raw"] and task["result"]["kept"] == []
        now = admin.get(f"/api/v1/os-templates/{old['id']}").body
        assert now["sha256"] == changed["sha256"] and now["volume"] != old["volume"]
        assert (pool / now["volume"]).read_bytes() == new_raw
        assert not (pool / old["volume"]).exists()

        # Changed again while a VM uses it: the VM's image stays, the refresh says why.
        users = {old["id"]: ["vm-b"]}
        real["panel"].references.register("os_template", lambda tid: users.get(tid, []),
                                          "VM")
        write_index(root, [entry(root, "images/tiny-raw.img.gz", compress(b"v3" * MIB, "gzip"),
                                 format="raw", compression="gzip")])
        task = admin.wait_task(admin.post(f"/api/v1/os-template-repos/{repo_id}/actions/"
                                          "refresh", {"update": True}).body["task"]["id"])
        assert task["result"]["updated"] == []
        assert task["result"]["kept"] == [{"template": "ftp-raw", "reason": "used by VM vm-b"}]
        assert admin.get(f"/api/v1/os-templates/{old['id']}").body["volume"] == now["volume"]
        assert (pool / now["volume"]).read_bytes() == new_raw
        users.clear()

    # An upload through the API: metadata first, then the file.
    data = images["qcow2"]
    made = admin.post("/api/v1/os-templates/uploads", {
        "name": "uploaded", "os_family": "testos", "format": "qcow2", "storage": storage["id"],
        "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}).body
    resp = admin.request("PUT", f"/api/v1/os-templates/{made['id']}/content", raw=data,
                         headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 202, resp
    task = admin.wait_task(resp.body["task"]["id"])
    assert task["state"] == "succeeded", task
    uploaded = task["result"]
    assert uploaded["origin"] == "upload" and uploaded["virtual_size"] == 2 * MIB
    assert (pool / uploaded["volume"]).read_bytes() == data
    assert work_files(real["panel"]) == []
