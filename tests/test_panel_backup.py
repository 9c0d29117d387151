"""Panel self-backup: a consistent archive of a running panel, restored into a fresh install.

A real panel (test-driver node, served over HTTP) gets state through its API (a VM
template, a user, a storage, an API token) and secret files (node SSH keys, guest keys);
backups are taken while a thread keeps writing to the store, and each restored store must
be a state that existed. The encrypted archive is restored by ``python app.py
restore-panel`` into a fresh data directory, a panel started on it, and the state checked
through the API. Wrong passphrases and tampered archives (a flipped byte, reordered,
dropped or appended chunks, a changed header) are refused with the data directory
untouched.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor_panel.backups.panel_archive import (
    ArchiveDamaged,
    DataDirNotEmpty,
    PassphraseRequired,
    WrongPassphrase,
    read_panel_manifest,
    restore_panel_archive,
    write_panel_archive,
)
from hypervisor_panel.cluster.keys import write_secret_file
from hypervisor_panel.panel import Panel
from hypervisor_panel.store import Store
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.server import serve_in_thread
from tests.conftest import ADMIN_PASSWORD, node_uri_for
from tests.support.client import Client
from tests.support.panel_backup_support import LocalWriter, split_frames, tree

ROOT = Path(__file__).resolve().parents[1]
WRITES = "panel_backup_test_writes"  # a table of this test only
PASSPHRASE = "correct horse battery staple"
ALICE_PASSWORD = "alice-password-1"


def run_cli(*args: str, passphrase_env: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HVP_BACKUP_PASSPHRASE"}
    if passphrase_env is not None:
        env["HVP_BACKUP_PASSPHRASE"] = passphrase_env
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=120, check=False)


class Served:
    """A panel served over HTTP on ``data``; :meth:`close` may be called more than once."""

    def __init__(self, data: Path, uri: str | None, images: Path) -> None:
        self.panel = Panel(data, local_uri=uri, default_storage_path=str(images))
        self.panel.start(admin_password=ADMIN_PASSWORD)
        self.server, port = serve_in_thread(create_app(self.panel))
        self.anon = Client(f"http://127.0.0.1:{port}")
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.stop()
            self.panel.close()


class StoreWriter(threading.Thread):
    """Keeps writing: each step inserts a document and bumps a counter in one locked step,
    so a consistent state has exactly ``counter.n`` documents besides the counter."""

    def __init__(self, store: Store) -> None:
        super().__init__(name="backup-test-writer", daemon=True)
        self.store, self.n = store, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with self.store.locked():
                self.n += 1
                self.store.insert(WRITES, {"id": f"w{self.n}", "pad": "x" * 100})
                if self.n == 1:
                    self.store.insert(WRITES, {"id": "counter", "n": 1})
                else:
                    self.store.update(WRITES, "counter", {"n": self.n})


def assert_consistent(store: Store) -> int:
    """The WRITES table is a state that existed; returns its count."""
    docs = {d["id"]: d for d in store.all(WRITES)}
    n = docs.pop("counter")["n"] if "counter" in docs else 0
    assert set(docs) == {f"w{i}" for i in range(1, n + 1)}
    return n


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "data", node_uri_for(tmp_path), tmp_path / "images")
    try:
        yield served
    finally:
        served.close()


def make_state(panel: Panel, admin: Client, tmp_path: Path) -> dict:
    """State through the API, secret files as the panel writes them, and excluded junk."""
    tpl = admin.post("/api/v1/vm-templates", {"name": "backed-up", "memory_mib": 128,
                                              "vcpus": 1, "disk_gib": 1})
    assert tpl.status == 201, tpl
    user = admin.post("/api/v1/users", {"name": "alice", "password": ALICE_PASSWORD})
    assert user.status == 201, user
    storage = admin.post("/api/v1/storages", {"name": "extra", "backend": "dir",
                                              "options": {"path": str(tmp_path / "extra")}})
    assert storage.status == 201, storage
    token = admin.post("/api/v1/tokens", {"name": "automation"})
    assert token.status == 201, token
    data = panel.data_dir
    write_secret_file(data / "ssh" / "node-n1.key", "PRIVATE KEY\n")
    panel.vms.keys.for_vm("vm1", "vm1")  # guest-keys/vm1/*: 0600 files in a 0700 folder
    (data / "plugin-data").mkdir(mode=0o750)
    (data / "plugin-data" / "notes.txt").write_text("plugin state\n")
    (data / "os-templates" / "cache").mkdir(parents=True)
    (data / "os-templates" / "cache" / "image.qcow2").write_bytes(b"\0" * 4096)
    (data / ".panel.db.1.2.tmp").write_text("half a snapshot")
    (data / "download.part").write_text("half a download")
    return {"token": token.body["token"], "template": tpl.body["id"]}


def test_backup_of_a_running_panel_restores_into_a_fresh_data_dir(running: Served,
                                                                  tmp_path: Path):
    panel, admin = running.panel, running.anon.login("admin", ADMIN_PASSWORD)
    state = make_state(panel, admin, tmp_path)
    before = tree(panel.data_dir)
    writer = StoreWriter(panel.store)
    writer.start()
    while writer.n < 20:
        time.sleep(0.01)
    archives, seen = [], []
    try:
        for i in range(3):  # plain archives, taken while the writer writes
            start = writer.n
            write_panel_archive(panel.data_dir, panel.store, LocalWriter(tmp_path, f"p{i}"),
                                None)
            seen.append(writer.n - start)
            archives.append(tmp_path / f"p{i}")
        progress: list[tuple[int, int]] = []
        manifest = write_panel_archive(panel.data_dir, panel.store,
                                       LocalWriter(tmp_path, "panel.hvp"), PASSPHRASE,
                                       progress=lambda done, total: progress.append(
                                           (done, total)))
    finally:
        writer.stop.set()
        writer.join(10)
    assert sum(seen) > 0, "the store was never written during a backup"
    assert manifest["encrypted"] and progress and progress[-1][0] == progress[-1][1]
    paths = {f["path"] for f in manifest["files"]}
    assert {"panel.db.journal", "ssh/node-n1.key", "guest-keys/vm1/host_ed25519",
            "plugin-data/notes.txt"} <= paths
    assert not [p for p in paths if p.startswith("os-templates") or p.endswith(
        (".tmp", ".part"))]
    for i, archive in enumerate(archives):  # each one is a state that existed
        assert read_panel_manifest(archive.open("rb"))["verified"]
        restore_panel_archive(archive.open("rb"), tmp_path / f"check{i}")
        store = Store(tmp_path / f"check{i}" / "panel.db")
        try:
            assert_consistent(store)
        finally:
            store.close()
    written = writer.n
    running.close()  # the old install is gone; a fresh one is restored

    passfile = tmp_path / "passphrase"
    passfile.write_text(PASSPHRASE + "\n")
    fresh = tmp_path / "fresh"
    done = run_cli("restore-panel", str(tmp_path / "panel.hvp"), "--data-dir", str(fresh),
                   "--passphrase-file", str(passfile))
    assert done.returncode == 0, done.stderr
    assert "Restored the panel backup" in done.stdout

    after = tree(fresh)
    assert after["."][0] == 0o700
    for rel in ("ssh", "guest-keys", "guest-keys/vm1", "plugin-data", "ssh/node-n1.key",
                "guest-keys/vm1/host_ed25519", "guest-keys/vm1/access_ed25519.pub",
                "plugin-data/notes.txt"):
        assert after[rel] == before[rel], rel  # same bytes, same mode
    assert stat.S_IMODE((fresh / "ssh" / "node-n1.key").stat().st_mode) == 0o600
    assert not (fresh / "os-templates").exists()
    assert not [p for p in after if p.endswith((".tmp", ".part"))]

    again = Served(fresh, None, tmp_path / "images")
    anon = again.anon
    try:
        assert 0 < assert_consistent(again.panel.store) <= written
        bearer = Client(anon.base, state["token"])
        me = bearer.get("/api/v1/auth/me")
        assert me.status == 200 and me.body["name"] == "admin", me
        admin2 = anon.login("admin", ADMIN_PASSWORD)
        anon.login("alice", ALICE_PASSWORD)
        names = {t["name"] for t in admin2.get("/api/v1/vm-templates").body["items"]}
        assert "backed-up" in names
        assert "extra" in {s["name"] for s in admin2.get("/api/v1/storages").body["items"]}
        assert "alice" in {u["name"] for u in admin2.get("/api/v1/users").body["items"]}
    finally:
        again.close()


PROCESS_WRITER = r'''
import sys
sys.path.insert(0, sys.argv[2])
from hypervisor_panel.store import Store
store = Store(sys.argv[1], compact_every=5)
i = 0
while True:
    store.insert("items", {"id": f"k{i}", "pad": "x" * 300})
    i += 1
    if i == 30:
        print("ready", flush=True)
'''


def _prefix_state(data: Path) -> int:
    store = Store(data / "panel.db")
    try:
        ids = {d["id"] for d in store.all("items")}
    finally:
        store.close()
    assert ids == {f"k{i}" for i in range(len(ids))}, "not a state that existed"
    return len(ids)


def test_the_store_copy_is_a_state_that_existed_across_compactions(tmp_path: Path):
    """Another process compacts every 5 writes while backups read the store files (with a
    lock of their own, as ``backup-panel`` does): every restored store is a prefix."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    proc = subprocess.Popen([sys.executable, "-c", PROCESS_WRITER, str(data / "panel.db"),
                             str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        store = Store(data / "panel.db")
        counts = []
        for i in range(30):
            write_panel_archive(data, store, LocalWriter(tmp_path, f"a{i}"), None)
            restore_panel_archive((tmp_path / f"a{i}").open("rb"), tmp_path / f"r{i}")
            counts.append(_prefix_state(tmp_path / f"r{i}"))
        store.close()
    finally:
        proc.kill()
        proc.wait(10)
    assert counts == sorted(counts) and counts[-1] > counts[0] + 40  # compactions between


def _small_data_dir(root: Path) -> Path:
    """A data directory with a store, secrets, and a 3 MiB file (several encrypted chunks)."""
    data = root / "data"
    data.mkdir(mode=0o700)
    store = Store(data / "panel.db")
    for i in range(20):
        store.insert("items", {"id": f"i{i}", "key": f"{data}/ssh/k{i}"})
    store.close()
    write_secret_file(data / "ssh" / "k1", "SECRET\n")
    (data / "blob.bin").write_bytes(os.urandom(3 << 20))
    return data


def _archive(data: Path, folder: Path, name: str, passphrase: str | None) -> bytes:
    store = Store(data / "panel.db")
    try:
        write_panel_archive(data, store, LocalWriter(folder, name), passphrase)
    finally:
        store.close()
    return (folder / name).read_bytes()


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def test_encrypted_archives_refuse_wrong_passphrases_and_tampering(tmp_path: Path):
    data = _small_data_dir(tmp_path)
    good = _archive(data, tmp_path, "enc.hvp", PASSPHRASE)
    head, frames = split_frames(good)
    assert len(frames) >= 4  # 3 MiB of noise: three full chunks and the last one
    created = head.index(b'"created":"') + len('"created":"') + 3  # a digit of the year
    bad = {
        "a flipped byte": (_flip(good, len(good) // 2), ArchiveDamaged),
        "a changed header": (_flip(good, created), ArchiveDamaged),
        "reordered chunks": (head + frames[1] + frames[0] + b"".join(frames[2:]),
                             ArchiveDamaged),
        "a dropped last chunk": (head + b"".join(frames[:-1]), ArchiveDamaged),
        "a truncated chunk": (good[:-7], ArchiveDamaged),
        "appended bytes": (good + b"more", ArchiveDamaged),
        "a duplicated chunk": (head + frames[0] + b"".join(frames), ArchiveDamaged),
    }
    target = tmp_path / "target"
    shutil.copytree(data, target)
    untouched = tree(target)
    for what, (archive, error) in bad.items():
        with pytest.raises(error):
            restore_panel_archive([archive], target, PASSPHRASE, force=True)
        assert tree(target) == untouched, what
    with pytest.raises(WrongPassphrase):
        restore_panel_archive([good], target, "not the passphrase", force=True)
    with pytest.raises(PassphraseRequired):
        restore_panel_archive([good], target, None, force=True)
    with pytest.raises(DataDirNotEmpty):
        restore_panel_archive([good], target, PASSPHRASE)
    assert tree(target) == untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "enc.hvp", "target"]

    header = read_panel_manifest([good])
    assert header["encrypted"] and not header["verified"] and "files" not in header
    assert "encryption" not in header  # the KDF salt and key check stay out of views
    full = read_panel_manifest(iter([good]), PASSPHRASE)
    assert full["verified"] and {"blob.bin", "ssh/k1"} <= {f["path"] for f in full["files"]}
    assert all(len(f["sha256"]) == 64 and f["size"] >= 0 for f in full["files"])

    (tmp_path / "tampered.hvp").write_bytes(bad["a flipped byte"][0])
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    for archive, passfile, message in (("enc.hvp", wrong, "wrong passphrase"),
                                       ("tampered.hvp", None, "tampered")):
        done = run_cli("restore-panel", str(tmp_path / archive), "--data-dir", str(target),
                       "--force", *(["--passphrase-file", str(passfile)] if passfile else []),
                       passphrase_env=PASSPHRASE)
        assert done.returncode == 1 and message in done.stderr, done
        assert "Traceback" not in done.stderr
        assert tree(target) == untouched

    done = restore_panel_archive([good], target, PASSPHRASE, force=True)
    kept = Path(done["previous"])
    assert kept.name.startswith("target.old-") and tree(kept) == untouched
    restored = tree(target)
    assert restored["blob.bin"] == untouched["blob.bin"]
    assert restored["ssh/k1"] == untouched["ssh/k1"] and restored["ssh/k1"][0] == 0o600


def test_offline_cli_backup_and_restore(tmp_path: Path):
    data = _small_data_dir(tmp_path)
    out = tmp_path / "offline.hvp"
    done = run_cli("backup-panel", str(out), "--data-dir", str(data),
                   passphrase_env=PASSPHRASE)
    assert done.returncode == 0 and "encrypted" in done.stdout, done
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    again = run_cli("backup-panel", str(out), "--data-dir", str(data))
    assert again.returncode == 1 and "already exists" in again.stderr

    fresh = tmp_path / "fresh"
    refused = run_cli("restore-panel", str(out), "--data-dir", str(fresh))
    assert refused.returncode == 1 and "passphrase" in refused.stderr
    assert not fresh.exists()
    done = run_cli("restore-panel", str(out), "--data-dir", str(fresh),
                   passphrase_env=PASSPHRASE)
    assert done.returncode == 0, done
    source, restored = tree(data), tree(fresh)
    for rel in ("ssh", "ssh/k1", "blob.bin", "."):
        assert restored[rel] == source[rel], rel
    store = Store(fresh / "panel.db")
    try:  # paths under the old data directory now name the new one
        assert store.get("items", "i3")["key"] == f"{fresh.absolute()}/ssh/k3"
    finally:
        store.close()
    busy = run_cli("restore-panel", str(out), "--data-dir", str(fresh),
                   passphrase_env=PASSPHRASE)
    assert busy.returncode == 1 and "not empty" in busy.stderr

    plain = tmp_path / "plain.hvp"
    assert run_cli("backup-panel", str(plain), "--data-dir", str(data)).returncode == 0
    assert not read_panel_manifest(plain.open("rb"))["encrypted"]
    forced = run_cli("restore-panel", str(plain), "--data-dir", str(fresh), "--force")
    assert forced.returncode == 0 and "previous data directory is kept" in forced.stdout


def test_a_failing_target_publishes_nothing(tmp_path: Path):
    data = _small_data_dir(tmp_path)
    store = Store(data / "panel.db")
    try:
        with pytest.raises(OSError, match="full"), \
                LocalWriter(tmp_path, "full.hvp", fail_after=1 << 20) as writer:
            write_panel_archive(data, store, writer, PASSPHRASE)
    finally:
        store.close()
    assert writer.aborted and not writer.published
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
