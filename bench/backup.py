"""Issue 11: VM backups to FTP on loopback against plain ftplib, in one run.

A VM with a 4 GiB qcow2 disk holding 256 MiB of data (the first 256 MiB of the files under
/usr/lib and /usr/share, in sorted order: binaries, libraries, text, already-compressed
files: what a system disk holds; written into the volume with ``qemu-io`` while the VM is
stopped) runs (no OS: SeaBIOS waits) while the panel backs it up to a real pyftpdlib server:
* full backup task time vs uploading the same 256 MiB with plain ftplib (goal <= 1.5x);
* incremental backup after 10% of the data changed (25.6 MiB rewritten) vs the full
  backup: time and bytes (goal <= 25% each);
* restore of that chain into the VM (verified first, then written into a new volume and
  swapped in) vs downloading the archives with plain ftplib (goal <= 1.5x).
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import json
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypervisor_panel.backups.archive_format import CHUNK, WORKERS, compress
from hypervisor_panel.panel import Panel
from hypervisor_panel.web.app import create_app
from hypervisor_panel.web.server import serve_in_thread

from ._support import ADMIN_PASSWORD, BenchError, JsonClient, Report, fmt_ms
from .provision import _ensure_libvirtd

NAME = "backup"
GOAL = ("4 GiB disk, 256 MiB of data, FTP on loopback: backup <= 1.5x plain ftplib upload; "
        "incremental after 10% changed <= 25% of the full's time and bytes; restore <= 1.5x "
        "plain ftplib download")
MIB = 1024 * 1024
DATA = 256 * MIB
CHANGED = DATA // 10
SOURCES = ("/usr/lib", "/usr/share")


def _sample(path: Path, size: int) -> str:
    """``size`` bytes of system files, concatenated; returns a description of the mix."""
    written, files = 0, 0
    with open(path, "wb") as out:
        for root in SOURCES:
            for top, dirs, names in os.walk(root):
                dirs.sort()
                for name in sorted(names):
                    file = Path(top) / name
                    if written >= size or file.is_symlink() or not file.is_file():
                        continue
                    try:
                        data = file.read_bytes()[: size - written]
                    except OSError:
                        continue
                    out.write(data)
                    written += len(data)
                    files += 1
    if written < size:
        raise BenchError(f"only {written} bytes of sample data under {SOURCES}")
    return f"{files} files from {', '.join(SOURCES)}"


def _qemu_write(volume: str, source: Path, offset: int, length: int) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                    f"write -q -s {source} {offset} {length}", volume],
                   check=True, capture_output=True)


def _ftp(server, action: str, name: str, data: bytes | None = None) -> tuple[float, int]:
    """Plain ftplib: upload ``data`` as ``name`` or download ``name``; (seconds, bytes)."""
    ftp = ftplib.FTP()  # noqa: S321 - the baseline: plain FTP on loopback
    ftp.connect("127.0.0.1", server.port, timeout=60)
    ftp.login(server.user, server.password)
    got = [0]
    started = time.perf_counter()
    if action == "upload":
        ftp.storbinary(f"STOR {name}", io.BytesIO(data or b""), blocksize=1024 * 1024)
        got[0] = len(data or b"")
    else:
        ftp.retrbinary(f"RETR {name}", lambda b: got.__setitem__(0, got[0] + len(b)),
                       blocksize=1024 * 1024)
    seconds = time.perf_counter() - started
    ftp.quit()
    return seconds, got[0]


def _floor(data: bytes) -> float:
    """Seconds of the work a backup of ``data`` cannot skip, without any I/O: compressing
    it (the archive's zstd level, its worker threads, in CHUNK pieces) and one SHA-256 pass
    over it (the manifest's hash), side by side as the backup runs them."""
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        frames = list(pool.map(compress, chunks))
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
    if not frames:
        raise BenchError("no data to compress")
    return time.perf_counter() - started


def _restore_floor(sample: Path, folder: Path) -> float:
    """Seconds of the work a restore of the 256 MiB cannot skip, without any network:
    writing them into a new file on the storage's disk and one SHA-256 pass over them."""
    out = folder / f"floor-{uuid.uuid4().hex[:6]}.raw"
    digest = hashlib.sha256()
    started = time.perf_counter()
    try:
        with open(sample, "rb") as src, open(out, "wb") as dst:
            while chunk := src.read(min(CHUNK, DATA - src.tell())):
                digest.update(chunk)
                dst.write(chunk)
        return time.perf_counter() - started
    finally:
        out.unlink(missing_ok=True)


def _task_seconds(client: JsonClient, body: dict) -> dict:
    (task,) = client.wait_tasks([body["task"]["id"]], timeout=900)
    if task["state"] != "succeeded":
        raise BenchError(f"task {task['name']} failed: {task['error']}")
    task["seconds"] = task["finished"] - task["started"]
    return task


def _action(client: JsonClient, vm: dict, action: str) -> None:
    _task_seconds(client, client.call("POST", f"/api/v1/vms/{vm['id']}/actions/{action}", {},
                                      expect=(202,)))


def _measure(report: Report, client: JsonClient, ftp, workdir: Path, vm: dict,
             volume: str) -> None:
    sample, change = workdir / "sample.bin", workdir / "change.bin"
    report.info("data", _sample(sample, DATA + CHANGED))
    with open(sample, "rb") as fh:
        data = fh.read(DATA)
        change.write_bytes(fh.read(CHANGED))
    _qemu_write(volume, sample, 0, DATA)
    upload_s, _ = _ftp(ftp, "upload", "plain.bin", data)
    floor_s = _floor(data)
    del data
    report.info("compressing + hashing the 256 MiB alone, no I/O (the floor)",
                f"{fmt_ms(floor_s)}: {floor_s / upload_s:.2f}x the plain upload")
    target = client.call("POST", "/api/v1/backup-targets", {
        "name": "bench-ftp", "backend": "ftp", "options": ftp.options()}, expect=(201,))["id"]
    _action(client, vm, "start")
    full = _task_seconds(client, client.call("POST", f"/api/v1/vms/{vm['id']}/actions/backup",
                                             {"target": target, "mode": "full"},
                                             expect=(202,)))
    report.info("plain ftplib upload of the 256 MiB", fmt_ms(upload_s))
    report.info("full backup task", f"{fmt_ms(full['seconds'])}, "
                f"{full['result']['size'] / MIB:.1f} MiB stored")
    report.check("full backup / plain upload", f"{full['seconds'] / upload_s:.2f}x",
                 "<= 1.5x", full["seconds"] / upload_s <= 1.5)
    _action(client, vm, "destroy")
    _qemu_write(volume, change, 64 * MIB, CHANGED)
    _action(client, vm, "start")
    inc = _task_seconds(client, client.call("POST", f"/api/v1/vms/{vm['id']}/actions/backup",
                                            {"target": target, "mode": "incremental"},
                                            expect=(202,)))
    if inc["result"]["type"] != "incremental":
        raise BenchError(f"the second backup was not incremental: {inc['result']}")
    t_ratio = inc["seconds"] / full["seconds"]
    b_ratio = inc["result"]["size"] / full["result"]["size"]
    report.info("incremental backup task", f"{fmt_ms(inc['seconds'])}, "
                f"{inc['result']['size'] / MIB:.1f} MiB stored")
    report.check("incremental / full time", f"{t_ratio:.2f}", "<= 0.25", t_ratio <= 0.25)
    report.check("incremental / full bytes", f"{b_ratio:.2f}", "<= 0.25", b_ratio <= 0.25)
    download_s = sum(_ftp(ftp, "download", f"backups/{b['archive']}")[0]
                     for b in client.call("GET", f"/api/v1/backups?vm={vm['id']}")["items"])
    _action(client, vm, "destroy")
    restore = _task_seconds(client, client.call(
        "POST", f"/api/v1/backups/{inc['result']['backup']}/actions/restore",
        {"mode": "replace", "start": False}, expect=(202,)))
    report.info("plain ftplib download of the two archives", fmt_ms(download_s))
    floor_s = _restore_floor(sample, Path(volume).parent)
    report.info("writing the 256 MiB into a file on the storage + hashing them (the floor)",
                f"{fmt_ms(floor_s)}: {floor_s / download_s:.2f}x the plain download")
    report.info("restore task (verify, write, swap)", fmt_ms(restore["seconds"]))
    report.check("restore / plain download", f"{restore['seconds'] / download_s:.2f}x",
                 "<= 1.5x", restore["seconds"] / download_s <= 1.5)
    for backup in client.call("GET", f"/api/v1/backups?vm={vm['id']}")["items"]:
        client.call("DELETE", f"/api/v1/backups/{backup['id']}", expect=(204,))
    client.call("DELETE", f"/api/v1/backup-targets/{target}", expect=(204,))


def run(workdir: Path) -> Report:
    from tests.support.ftpserver import FtpServer

    report = Report()
    workdir.mkdir(parents=True, exist_ok=True)
    uri = _ensure_libvirtd()
    tag = uuid.uuid4().hex[:6]
    path = f"/var/lib/libvirt/images/hvp-bench-bk-{tag}"
    panel = Panel(workdir / "data", local_uri=uri, default_storage_path=None)
    panel.start(admin_password=ADMIN_PASSWORD)
    server, port = serve_in_thread(create_app(panel))
    client = JsonClient(port, timeout=900).login()
    try:
        with FtpServer(workdir / "ftp") as ftp:
            storage = client.call("POST", "/api/v1/storages", {
                "name": f"bk-{tag}", "backend": "dir", "options": {"path": path}},
                expect=(201,))
            template = client.call("POST", "/api/v1/vm-templates", {
                "name": "bench-bk", "memory_mib": 64, "vcpus": 1, "disk_gib": 4},
                expect=(201,))["id"]
            body = client.call("POST", "/api/v1/vms", {
                "name": f"bk-{tag}", "vm_template": template, "storage": storage["id"]},
                expect=(202,))
            vm = client.call("GET", f"/api/v1/vms/{_task_seconds(client, body)['result']['vm']}")
            try:
                _measure(report, client, ftp, workdir, vm, f"{path}/{vm['disks'][0]['volume']}")
            finally:
                status, payload = client.raw("POST", f"/api/v1/vms/{vm['id']}/actions/destroy")
                time.sleep(1)
                status, payload = client.raw("DELETE", f"/api/v1/vms/{vm['id']}")
                if status == 202:
                    client.wait_tasks([json.loads(payload)["task"]["id"]])
                client.raw("DELETE", f"/api/v1/storages/{storage['id']}")
    finally:
        client.close()
        server.stop()
        panel.close()
        subprocess.run(["rm", "-rf", path], check=False)
    return report
