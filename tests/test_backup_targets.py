"""Backup targets against real servers: a local folder, pyftpdlib over FTP and explicit FTPS.

The contract (hypervisor_panel/backup.py): write under a temporary name, publish after a
size check, never list an unpublished archive, read ranges, resume after a broken upload.
Faults: the FTP server SIGKILLed mid-upload (then restarted on the same port: the upload
resumes and the published bytes are the source's), wrong credentials (no password in the
message), a full target (a small tmpfs: the partial file is removed), a server that never
answers (fails within the timeout), system folders for the local target.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor_panel.backup import BackupTarget, TargetEntry, TargetError
from hypervisor_panel.plugins import get_plugin_manager
from hypervisor_panel.validation import check_schema
from tests.support.ftpserver import FtpServer
from tests.support.servers import free_port, self_signed

MIB = 1024 * 1024
DATA = os.urandom(3 * MIB + 12345)
NAME = "vm-1/disk-0.tar.zst"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def read_all(target: BackupTarget, name: str, offset: int = 0,
             length: int | None = None) -> bytes:
    return b"".join(target.open_read(name, offset, length))


def classes() -> dict[str, type[BackupTarget]]:
    pm = get_plugin_manager()
    return {cls.name: cls for found in pm.hook.register_backup_targets(panel=None)
            for cls in found}


def make(backend: str, **options: object) -> BackupTarget:
    cls = classes()[backend]
    return cls({"id": uuid.uuid4().hex[:8], "name": "t", "backend": backend,
                "options": options})


@pytest.fixture(scope="module")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    with FtpServer(tmp_path_factory.mktemp("ftp")) as server:
        yield server


@pytest.fixture(scope="module")
def ftps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    with FtpServer(tmp_path_factory.mktemp("ftps"), tls=True) as server:
        yield server


@pytest.fixture(params=["local", "ftp", "ftps"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[BackupTarget, Path]:
    """A target and the folder on disk that holds its files (to look behind its back)."""
    if request.param == "local":
        folder = tmp_path / "backups" / "local"
        return make("local", path=str(folder)), folder
    server = request.getfixturevalue(f"{request.param}_server")
    remote = f"/run-{uuid.uuid4().hex[:8]}/backups"
    return make("ftp", **server.options(path=remote)), server.home / remote.lstrip("/")


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "hvp-test-full", str(path)],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


# -- registration -------------------------------------------------------------------------
def test_both_targets_come_from_the_hook_with_valid_schemas():
    found = classes()
    assert {"local", "ftp"} <= set(found)
    for cls in (found["local"], found["ftp"]):
        check_schema(cls.options_schema)
        assert cls.resumable and cls.description
    ftp_props = found["ftp"].options_schema["properties"]
    assert ftp_props["password"]["writeOnly"] is True
    assert {"host", "port", "username", "password", "path", "tls", "passive",
            "timeout"} <= set(ftp_props)
    assert ftp_props["port"]["default"] == 21 and ftp_props["timeout"]["default"] == 10
    assert ftp_props["passive"]["default"] is True


# -- the contract on every target ---------------------------------------------------------
def test_write_publish_list_stat_read_delete(target):
    tgt, folder = target
    tgt.check()
    assert folder.is_dir() and os.listdir(folder) == [] and tgt.list() == []  # probe gone
    with tgt.open_write(NAME) as writer:
        assert writer.offset == 0
        for block in chunks(DATA):
            writer.write(block)
        assert tgt.list() == [], "an unpublished archive is listed"
        assert [e.name for e in tgt.list_partial()] == [NAME]
        entry = writer.publish(len(DATA))
    assert (entry.name, entry.size) == (NAME, len(DATA))
    assert sha((folder / NAME).read_bytes()) == sha(DATA)
    with tgt.open_write("panel-1.tar") as writer:
        writer.write(b"panel")
        writer.publish(5)
    assert [(e.name, e.size) for e in tgt.list()] == [("panel-1.tar", 5), (NAME, len(DATA))]
    assert [e.name for e in tgt.list("vm-1")] == [NAME]
    assert tgt.list("no-such-folder") == [] and tgt.list_partial() == []
    stat = tgt.stat(NAME)
    assert stat is not None and stat.size == len(DATA)
    assert stat.mtime is None or abs(stat.mtime - time.time()) < 120
    assert tgt.stat("vm-1/missing") is None and tgt.stat("vm-1") is None

    assert sha(read_all(tgt, NAME)) == sha(DATA)
    for offset, length in [(0, 10), (1000, 5000), (MIB + 7, 2 * MIB), (len(DATA) - 5, None),
                           (len(DATA) - 5, 100), (len(DATA), 10), (123, 0)]:
        end = None if length is None else offset + length
        assert read_all(tgt, NAME, offset, length) == DATA[offset:end], (offset, length)
    stream = tgt.open_read(NAME, 10)
    first = next(iter(stream))
    assert first and DATA[10:].startswith(first)
    stream.close()  # type: ignore[attr-defined]  # leaving a stream early is fine
    with pytest.raises(TargetError, match="no archive"):
        read_all(tgt, "vm-1/missing")

    tgt.delete(NAME)
    tgt.delete(NAME)  # already gone: no error
    assert tgt.stat(NAME) is None
    assert [e.name for e in tgt.list()] == ["panel-1.tar"]


def test_an_unpublished_archive_is_never_listed_and_resumes(target):
    tgt, folder = target
    with pytest.raises(RuntimeError), tgt.open_write(NAME) as writer:
        writer.write(DATA[:MIB])
        raise RuntimeError("the backup failed")  # leaves the partial file to resume
    assert tgt.list() == []
    assert [(e.name, e.size) for e in tgt.list_partial()] == [(NAME, MIB)]
    with tgt.open_write(NAME, resume=True) as writer:
        assert writer.offset == MIB
        for block in chunks(DATA[writer.offset:]):
            writer.write(block)
        writer.publish(len(DATA))
    assert tgt.list_partial() == []
    assert sha(read_all(tgt, NAME)) == sha(DATA)

    with tgt.open_write("other") as writer:  # left without publish nor error: removed
        writer.write(b"x" * 1000)
    assert tgt.list_partial() == [] and [e.name for e in tgt.list()] == [NAME]
    writer = tgt.open_write("other")
    writer.write(b"y" * 10)
    writer.abort(keep_partial=True)
    assert [e.name for e in tgt.list()] == [NAME]
    with tgt.open_write("other") as writer:  # no resume: starts again at 0
        assert writer.offset == 0
    tgt.open_write("other").abort(keep_partial=True)
    tgt.delete_partial("other")
    tgt.delete_partial("other")
    assert tgt.list_partial() == []
    assert sorted(p.name for p in folder.rglob("*")) == sorted(["vm-1", "disk-0.tar.zst"])


def test_publish_checks_the_size_and_names_are_checked(target):
    tgt, _folder = target
    with pytest.raises(TargetError, match="expected"), tgt.open_write("short") as writer:
        writer.write(b"0123456789")
        writer.publish(11)
    assert tgt.stat("short") is None and tgt.list() == []
    for bad in ["../x", ".partial-x", "a/b/c", "", "x y", "/abs"]:
        with pytest.raises(TargetError, match="invalid archive name"):
            tgt.open_write(bad)
        with pytest.raises(TargetError):
            tgt.stat(bad)


# -- FTP faults ---------------------------------------------------------------------------
@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps"])
def test_server_killed_mid_upload_then_the_upload_resumes(tmp_path, tls):
    with FtpServer(tmp_path, tls=tls) as server:
        tgt = make("ftp", **server.options(path="/kill"))
        partial = server.home / "kill" / "vm-1" / ".partial-disk-0.tar.zst"
        with pytest.raises(TargetError) as err, tgt.open_write(NAME) as writer:
            writer.write(DATA[:MIB])
            deadline = time.monotonic() + 10
            while not (partial.exists() and partial.stat().st_size > 0):
                assert time.monotonic() < deadline, "the server wrote nothing"
                time.sleep(0.01)
            server.kill()
            for _ in range(256):  # the broken connection shows within a few blocks
                writer.write(DATA[MIB:MIB + 256 * 1024])
        message = str(err.value)
        assert f"FTP server 127.0.0.1:{server.port} was lost" in message
        assert "kept to resume" in message and server.password not in message

        server.restart()
        assert tgt.list() == []
        [kept] = tgt.list_partial()
        assert kept.name == NAME and 0 < kept.size <= MIB
        with tgt.open_write(NAME, resume=True) as writer:
            assert 0 < writer.offset == kept.size <= len(DATA)
            for block in chunks(DATA[writer.offset:]):
                writer.write(block)
            writer.publish(len(DATA))
        assert sha((server.home / "kill" / NAME).read_bytes()) == sha(DATA)
        assert sha(read_all(tgt, NAME)) == sha(DATA)
        assert tgt.list_partial() == [] and [e.name for e in tgt.list()] == [NAME]


@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps"])
def test_a_read_that_loses_the_server_raises_instead_of_ending_short(tmp_path, tls):
    with FtpServer(tmp_path, tls=tls) as server:
        tgt = make("ftp", **server.options(path="/read"))
        (server.home / "read").mkdir()
        (server.home / "read" / "big.tar").write_bytes(DATA * 8)  # 24 MiB
        stream = iter(tgt.open_read("big.tar"))
        got = len(next(stream))
        server.kill()
        with pytest.raises(TargetError, match=f"FTP server 127.0.0.1:{server.port}") as err:
            for block in stream:
                got += len(block)
        assert got < len(DATA) * 8 and server.password not in str(err.value)


@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps"])
def test_wrong_credentials_say_so_without_the_password(ftp_server, ftps_server, tls):
    server = ftps_server if tls else ftp_server
    for user, password in [(server.user, "Wrong-Secret-123"), ("nobody", server.password)]:
        tgt = make("ftp", **server.options(username=user, password=password))
        for call in (tgt.check, tgt.list, lambda t=tgt: t.open_write("x")):
            with pytest.raises(TargetError) as err:
                call()
            message = str(err.value)
            assert f"FTP server 127.0.0.1:{server.port} refused the login for user " \
                   f"'{user}'" in message
            assert password not in message and server.password not in message


def test_plain_ftp_to_a_server_that_requires_tls_is_refused_clearly(ftps_server):
    tgt = make("ftp", **ftps_server.options(tls=False))
    with pytest.raises(TargetError, match="refused the login.*TLS") as err:
        tgt.check()
    assert ftps_server.password not in str(err.value)


@pytest.mark.parametrize("tls", [False, True], ids=["ftp", "ftps"])
def test_a_full_ftp_target_fails_and_leaves_no_partial_file(tmp_path, tls):
    with FtpServer(tmp_path, tls=tls, full_size="8m") as server:
        assert server.full is not None
        tgt = make("ftp", **server.options(path="/full"))
        started = time.monotonic()
        with pytest.raises(TargetError) as err, tgt.open_write("big.tar") as writer:
            for block in chunks(os.urandom(2 * MIB) * 8):  # 16 MiB into 8 MiB
                writer.write(block)
            writer.publish(16 * MIB)
        assert time.monotonic() - started < 15
        message = str(err.value)
        assert f"FTP server 127.0.0.1:{server.port}" in message and "full" in message
        assert "partial upload was removed" in message and server.password not in message
        assert os.listdir(server.full) == [], "the partial file stayed on the server"
        assert tgt.list_partial() == [] and tgt.list() == []
        with tgt.open_write("small.tar") as writer:  # the space is back
            writer.write(b"ok")
            writer.publish(2)
        assert [e.name for e in tgt.list()] == ["small.tar"]


def test_a_stalled_upload_fails_within_the_timeout_and_keeps_the_partial_file(tmp_path):
    with FtpServer(tmp_path, upload_rate=64 * 1024) as server:
        tgt = make("ftp", **server.options(path="/slow", timeout=2))
        started = time.monotonic()
        with pytest.raises(TargetError, match="accepted no data for 2 s") as err, \
                tgt.open_write("slow.tar") as writer:
            for _ in range(1024):  # 256 MiB at most: the socket buffers fill long before
                writer.write(DATA[:256 * 1024])
        assert time.monotonic() - started < 15 and "kept to resume" in str(err.value)
        [kept] = tgt.list_partial()
        assert kept.name == "slow.tar" and kept.size > 0


def test_a_server_that_never_answers_fails_within_the_timeout():
    with socket.socket() as silent:  # accepts TCP connections (backlog), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        tgt = make("ftp", host="127.0.0.1", port=port, username="u", password="Secret-9",
                   timeout=2)
        started = time.monotonic()
        with pytest.raises(TargetError) as err:
            tgt.check()
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 4.5, elapsed
    assert str(err.value) == f"could not connect to FTP server 127.0.0.1:{port} in 2 s " \
                             "(no answer)"


def test_a_closed_port_fails_at_once():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(TargetError, match=f"127.0.0.1:{port}: connection refused"):
        make("ftp", host="127.0.0.1", port=port, password="Secret-9").check()
    assert time.monotonic() - started < 2


def test_ftps_verifies_the_server_against_a_given_ca(ftps_server, tmp_path):
    assert ftps_server.cert is not None
    good = make("ftp", **ftps_server.options(tls_ca=ftps_server.cert[0].read_text()))
    good.check()
    other_cert, _key = self_signed(tmp_path)
    bad = make("ftp", **ftps_server.options(tls_ca=other_cert.read_text()))
    with pytest.raises(TargetError, match="TLS handshake .* failed.*certificate"):
        bad.check()


def test_active_mode_and_a_missing_folder(ftp_server):
    tgt = make("ftp", **ftp_server.options(path="/active", passive=False))
    with tgt.open_write("a.tar") as writer:
        writer.write(DATA[:MIB])
        writer.publish(MIB)
    assert read_all(tgt, "a.tar", 5, 10) == DATA[5:15]
    assert tgt.list() == [TargetEntry("a.tar", MIB, tgt.list()[0].mtime)]
    with pytest.raises(TargetError, match="the folder /nowhere does not exist"):
        make("ftp", **ftp_server.options(path="/nowhere")).list()
    assert not (ftp_server.home / "nowhere").exists()


# -- the local target ---------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/", "/etc", "/etc/hvp-backups", "/usr", "/usr/lib/x", "/bin", "/boot", "/proc/1",
    "/sys", "/dev/shm/b", "/var/lib/libvirt", "/var/lib/libvirt/images/bk", "/var", "/tmp",
    "//etc", "/etc/", "backups", "./backups", "/srv/../etc", "/srv/x/../../etc", "",
])
def test_the_local_target_refuses_system_and_relative_paths(path):
    with pytest.raises(TargetError, match="backup folder"):
        make("local", path=path).check()


def test_the_local_target_resolves_symlinks_and_creates_its_folder_0700(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    with pytest.raises(TargetError, match=r"resolved: /etc/backups\)"):
        make("local", path=str(link / "backups")).check()
    folder = tmp_path / "a" / "b"
    tgt = make("local", path=str(folder))
    with pytest.raises(TargetError, match="does not exist"):
        tgt.list()
    tgt.check()
    assert folder.stat().st_mode & 0o777 == 0o700 and os.listdir(folder) == []
    free = tgt.free_space()
    assert free is not None and free > 0


def test_a_full_local_target_fails_and_leaves_no_partial_file(tmp_path):
    with small_tmpfs(tmp_path / "small") as mount:
        tgt = make("local", path=str(mount / "bk"))
        with pytest.raises(TargetError, match="is full.*partial file was removed"), \
                tgt.open_write("big.tar") as writer:
            for block in chunks(os.urandom(MIB) * 6):  # 6 MiB into 4 MiB
                writer.write(block)
            writer.publish(6 * MIB)
        assert os.listdir(mount / "bk") == [] and tgt.list_partial() == []
