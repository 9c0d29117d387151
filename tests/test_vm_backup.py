"""The VM backup engine: the archive format, chains, and real backups on the real libvirtd.

The fast tests build archives from synthetic extents. The slow ones back up TCG guests with
libvirt's pull-mode backup API over NBD, then restore into new volumes and compare what a
guest would read (``qemu-img convert -O raw`` of source and restore).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import pytest
from hypervisor_panel_plugins.storage_dir.backend import DirStorage

from hypervisor_panel.backups import qcow2_fill, vm_backup
from hypervisor_panel.backups.archive import (
    CHUNK,
    ArchiveBuilder,
    ArchiveDamaged,
    BackupError,
    compress,
    extent_digest_header,
    read_manifest,
    verify_archive,
)
from hypervisor_panel.backups.backup_job import backup_job_running, panel_checkpoints
from hypervisor_panel.backups.chain import ArchiveRef, check_chain, disk_layers, merged_disk
from hypervisor_panel.backups.vm_backup import (
    LOCAL_SOCKET_DIR,
    NbdServer,
    ParentBackup,
    backup_domain,
)
from hypervisor_panel.backups.vm_disks import (
    backup_xml,
    checkpoint_xml,
    domain_disks,
    helper_xml,
)
from hypervisor_panel.backups.vm_restore import DiskPlacement, restore_chain
from hypervisor_panel.virt.domain_xml import Disk, DomainBuilder
from tests.support.dir_target import DirTarget
from tests.support.guest import VIRTIO_MODULES, build_guest_assets
from tests.support.realvirt import REPO_ROOT, ensure_libvirtd, wait_for_serial

MIB = 1024 * 1024


# -- fast: the archive format and chains --------------------------------------------------
def write_synthetic(target: DirTarget, name: str, size: int, extents: list[tuple],
                    kind: str = "full", parent: dict | None = None,
                    checkpoint: str = "hvp-a") -> dict:
    """An archive with one disk ``vda`` holding ``extents`` ((offset, bytes|int zeros))."""
    mode = "full" if kind == "full" else "incremental"
    with target.open_write(name) as writer:
        builder = ArchiveBuilder(writer)
        builder.add_blob("domain-xml", "domain.xml", b"<domain/>")
        builder.add_blob("vm-record", "vm.json", b'{"id": "v1"}')
        builder.begin_part("disk", "vda", size, mode, target="vda", format="qcow2")
        digest = hashlib.sha256()
        for offset, data in extents:
            if isinstance(data, int):
                builder.add_zero(offset, data)
            else:
                digest.update(extent_digest_header(offset, len(data)) + data)
                builder.add_data(offset, len(data), compress(data))
        builder.end_part(digest.hexdigest())
        total = builder.finish({"kind": kind, "domain": {"name": "d", "uuid": "u-1"},
                                "checkpoint": checkpoint, "parent": parent,
                                "fallback_reason": None})
        writer.publish(total)
    return read_manifest(target, name)


def rebuild(target: DirTarget, names: list[str], size: int) -> bytes:
    chain = [ArchiveRef(target, n) for n in names]
    manifests = [read_manifest(target, n) for n in names]
    check_chain(chain, manifests)
    out = bytearray(size)
    position = 0
    for offset, length, data in merged_disk(disk_layers(chain, manifests, "vda"), size,
                                            verify=True):
        assert offset == position
        if data is not None:
            assert len(data) == length
            out[offset:offset + length] = data
        position = offset + length
    assert position == size
    return bytes(out)


@pytest.fixture
def target(tmp_path: Path) -> DirTarget:
    return DirTarget({"id": "t", "name": "t", "backend": "test-dir",
                      "options": {"path": str(tmp_path / "target")}})


def test_archive_round_trip_verifies_and_reads_back(target: DirTarget):
    rng = random.Random(1)
    a, b = rng.randbytes(CHUNK), rng.randbytes(12345)
    manifest = write_synthetic(target, "full.hvpbak", 64 * MIB,
                               [(0, a), (CHUNK, 2 * MIB), (10 * MIB, b)])
    assert verify_archive(target, "full.hvpbak")["kind"] == "full"
    disk = manifest["parts"][2]
    assert (disk["data_bytes"], disk["zero_bytes"], disk["data_extents"]) == \
        (CHUNK + 12345, 2 * MIB, 2)
    image = rebuild(target, ["full.hvpbak"], 64 * MIB)
    assert image[:CHUNK] == a and image[10 * MIB:10 * MIB + 12345] == b
    assert image.count(0, CHUNK, 10 * MIB) == 10 * MIB - CHUNK


@pytest.mark.parametrize("where", ["data", "manifest", "footer", "magic", "truncated"])
def test_a_tampered_or_truncated_archive_is_refused(target: DirTarget, where: str):
    rng = random.Random(2)
    write_synthetic(target, "x.hvpbak", 16 * MIB, [(0, rng.randbytes(MIB)), (4 * MIB, MIB)])
    path = target.root / "x.hvpbak"
    blob = bytearray(path.read_bytes())
    manifest = read_manifest(target, "x.hvpbak")
    disk = manifest["parts"][2]
    if where == "truncated":
        del blob[-100:]
    else:
        at = {"data": disk["stored_offset"] + disk["stored_length"] // 2,
              "manifest": manifest["manifest_offset"] + 10, "footer": len(blob) - 3,
              "magic": 2}[where]
        blob[at] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ArchiveDamaged):
        verify_archive(target, "x.hvpbak")


def test_chain_merges_newest_first_and_checks_links(target: DirTarget):
    rng = random.Random(3)
    size = 32 * MIB
    base = [(0, rng.randbytes(CHUNK)), (CHUNK, rng.randbytes(CHUNK)), (20 * MIB, MIB)]
    m0 = write_synthetic(target, "c0", size, base, checkpoint="hvp-0")
    patch = rng.randbytes(100_000)
    inc = [(1000, patch), (CHUNK + 10, 5000), (25 * MIB, rng.randbytes(7))]
    write_synthetic(target, "c1", size, inc, kind="incremental",
                    parent={"archive": "c0", "checkpoint": m0["checkpoint"]},
                    checkpoint="hvp-1")
    expected = bytearray(size)
    expected[0:CHUNK], expected[CHUNK:2 * CHUNK] = base[0][1], base[1][1]
    expected[1000:1000 + len(patch)] = patch
    expected[CHUNK + 10:CHUNK + 5010] = bytes(5000)
    expected[25 * MIB:25 * MIB + 7] = inc[2][1]
    assert rebuild(target, ["c0", "c1"], size) == bytes(expected)
    write_synthetic(target, "orphan", size, inc, kind="incremental",
                    parent={"archive": "c0", "checkpoint": "hvp-other"}, checkpoint="hvp-2")
    with pytest.raises(BackupError) as err:
        rebuild(target, ["c0", "orphan"], size)
    assert err.value.code == "broken_chain"


def test_backup_and_checkpoint_xml_are_built_from_validated_values():
    xml = ("<domain><devices>"
           "<disk type='file' device='disk'><driver type='qcow2'/><source file='/i/a.qcow2'/>"
           "<target dev='vda'/></disk>"
           "<disk type='file' device='disk'><driver type='raw'/><source file='/i/b.img'/>"
           "<target dev='vdb'/></disk>"
           "<disk type='file' device='cdrom'><source file='/i/c.iso'/><target dev='hdc'/>"
           "<readonly/></disk>"
           "<interface type='network'><source network='n'/></interface>"
           "</devices></domain>")
    disks = domain_disks(xml)
    assert [(d.target, d.bitmaps) for d in disks] == [("vda", True), ("vdb", False)]
    assert checkpoint_xml("hvp-1", disks) == (
        "<domaincheckpoint><name>hvp-1</name><description>hypervisor panel backup"
        "</description><disks><disk name=\"vda\" checkpoint=\"bitmap\" />"
        "<disk name=\"vdb\" checkpoint=\"no\" /></disks></domaincheckpoint>")
    scratch = {d.target: d.scratch_path("/s", "t") for d in disks}
    pull = backup_xml(disks, "127.0.0.1", 10809, "hvp-0", scratch)
    assert "<incremental>hvp-0</incremental>" in pull
    assert "backupmode=\"incremental\" incremental=\"hvp-0\"" in pull
    assert "name=\"vdb\" backup=\"yes\" type=\"file\" exportname=\"vdb\" " \
        "backupmode=\"full\"" in pull
    with pytest.raises(BackupError):
        backup_xml(disks, "127.0.0.1", 10809, "bad'name", scratch)
    assert "interface" not in helper_xml(xml) and "c.iso" in helper_xml(xml)
    assert os.path.basename(scratch["vda"]) == "a.qcow2.hvp-scratch-t"
    unix = backup_xml(disks, "127.0.0.1", 0, None, scratch, socket="/var/lib/q/hvp-nbd-t.sock")
    assert "<server transport=\"unix\" socket=\"/var/lib/q/hvp-nbd-t.sock\" />" in unix
    for bad in ("relative.sock", "/x\n.sock", "/" + "s" * 120):  # sun_path holds 108 bytes
        with pytest.raises(BackupError, match="socket"):
            backup_xml(disks, "127.0.0.1", 0, None, scratch, socket=bad)


class _Volume:
    """Just enough of a virStorageVol for clone_xml."""

    def path(self) -> str:
        return "/srv/vm/base.qcow2"

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802 - libvirt's name
        return "<volume><target><format type='qcow2'/></target></volume>"


def test_new_volumes_and_linked_clones_are_qcow2_v3():
    backend = DirStorage({"name": "local", "options": {"path": "/srv/vm"}})
    for xml in (backend.volume_xml("a.qcow2", 5), backend.clone_xml("b.qcow2", 5, _Volume())):
        assert "<target><format type=\"qcow2\" /><compat>1.1</compat></target>" in xml
    assert "compat" not in backend.volume_xml("c.img", 5, "raw")


# -- slow: real backups of real TCG guests ------------------------------------------------



UNDEFINE = (libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
BLOCK = 64 * 1024
QDEV = "/machine/peripheral/virtio-disk0/virtio-backend"  # vda, as the guest writes it
WRITER_BLOCKS = 256
WRITER_INIT = f"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
dmesg -n 1
for m in {" ".join(VIRTIO_MODULES[:6])}; do
    [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko
done
n=0
while [ ! -b /dev/vda ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n + 1)); done
echo HVP-WRITER-READY
i=0
while true; do
    i=$((i + 1))
    yes "HVP-BLOCK-$i-" | head -c {BLOCK} >/tmp/block
    dd if=/tmp/block of=/dev/vda bs={BLOCK} seek=$((i % {WRITER_BLOCKS})) count=1 conv=fsync 2>/dev/null
    echo "HVP-WROTE $i"
done
"""


def newc(files: dict[str, bytes]) -> bytes:
    """A gzip'ed cpio (newc) holding executable ``files``: appended to an initrd, it wins."""
    out = bytearray()
    entries = [(name, 0o100755, data) for name, data in files.items()]
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + "".join(f"{f:08x}" for f in fields).encode() + encoded
        out += b"\0" * (-(110 + len(encoded)) % 4) + data + b"\0" * (-len(data) % 4)
    return gzip.compress(bytes(out), mtime=0)


@dataclass
class Real:
    conn: libvirt.virConnect
    backend: DirStorage
    pool: libvirt.virStoragePool
    files: Path
    tag: str
    assets: object
    target: DirTarget
    domains: list = field(default_factory=list)

    def volume(self, name: str, size: int, fmt: str = "qcow2") -> libvirt.virStorageVol:
        suffix = "img" if fmt == "raw" else fmt
        return self.backend.create_volume(self.conn, f"{name}-{self.tag}.{suffix}", size, fmt)

    def domain(self, name: str, disks: list[libvirt.virStorageVol], initrd: str | None = None,
               start: bool = True) -> libvirt.virDomain:
        builder = DomainBuilder(
            name=f"hvp-bk-{name}-{self.tag}", uuid=str(uuid.uuid4()), domain_type="qemu",
            memory_mib=128, vcpus=1, kernel=str(self.assets.kernel),
            initrd=initrd or str(self.assets.initrd), cmdline="console=ttyS0 quiet",
            disks=[Disk("file", {"file": v.path()}, v.name().rsplit(".", 1)[-1].replace(
                "img", "raw"), f"vd{chr(97 + i)}") for i, v in enumerate(disks)])
        dom = self.conn.defineXML(builder.to_xml())
        self.domains.append(dom)
        if start:
            dom.create()
        return dom

    def serial(self, dom: libvirt.virDomain) -> Path:
        return Path(f"/var/log/libvirt/qemu/{dom.name()}-serial.log")

    def remove(self, dom: libvirt.virDomain) -> None:
        logs = [self.serial(dom), Path(f"/var/log/libvirt/qemu/{dom.name()}.log")]
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(UNDEFINE)
        for log in logs:
            log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Real]:
    conn = libvirt.open(ensure_libvirtd())
    assets = build_guest_assets(REPO_ROOT / ".cache" / "guest")
    tag = uuid.uuid4().hex[:6]
    path = Path(f"/var/lib/libvirt/images/hvp-bk-{tag}")
    files = Path(f"/var/lib/libvirt/images/hvp-bkf-{tag}")
    files.mkdir(mode=0o755)
    backend = DirStorage({"name": f"bk-{tag}", "options": {"path": str(path)}})
    pool = backend.ensure_pool(conn)
    target = DirTarget({"id": "t", "name": "t", "backend": "test-dir",
                        "options": {"path": str(tmp_path_factory.mktemp("target"))}})
    env = Real(conn, backend, pool, files, tag, assets, target)
    try:
        yield env
    finally:
        for dom in env.domains:
            with contextlib.suppress(libvirt.libvirtError):
                env.remove(dom)
        pool.refresh(0)
        for vol in pool.listAllVolumes(0):
            vol.delete(0)
        backend.remove_pool(conn)
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(files, ignore_errors=True)
        conn.close()


def fill(vol: libvirt.virStorageVol, regions: list[tuple[int, int]], seed: int) -> None:
    """Write random data into ``regions`` of a stopped domain's qcow2 volume."""
    rng = random.Random(seed)
    raw = Path(vol.path() + ".src")
    with open(raw, "wb") as fh:
        fh.truncate(vol.info()[1])
        for offset, length in regions:
            fh.seek(offset)
            fh.write(rng.randbytes(length))
    try:
        subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "qcow2", str(raw),
                        vol.path()], check=True, capture_output=True)
    finally:
        raw.unlink()


def hmp(dom: libvirt.virDomain, command: str) -> str:
    import libvirt_qemu

    return libvirt_qemu.qemuMonitorCommand(dom, command,
                                           libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)


def live_write(real: Real, dom: libvirt.virDomain, writes: list[tuple[int, int]],
               seed: int) -> None:
    """Writes through the running QEMU's block layer (as a guest's would be tracked)."""
    rng = random.Random(seed)
    source = real.files / f"pattern-{seed}.bin"
    for offset, length in writes:
        source.write_bytes(rng.randbytes(length))
        source.chmod(0o644)
        out = hmp(dom, f'qemu-io -d {QDEV} "write -s {source} {offset} {length}"')
        assert "rror" not in out and "onflict" not in out, out
    source.unlink()


def same_content(a: str, b: str) -> bool:
    proc = subprocess.run(["qemu-img", "compare", "-U", a, b], capture_output=True, text=True)
    return proc.returncode == 0


def restore(real: Real, names: list[str], devs: list[str], **kw) -> dict:
    chain = [ArchiveRef(real.target, n) for n in names]
    placements = {d: DiskPlacement(real.backend, f"restored-{d}-{uuid.uuid4().hex[:6]}.qcow2")
                  for d in devs}
    return restore_chain(real.conn, chain, placements, **kw).volumes


def pool_files(real: Real) -> set[str]:
    return set(os.listdir(real.backend.options["path"]))


@pytest.mark.slow
def test_full_then_incremental_after_a_10_percent_change_restores_byte_identical(real: Real):
    vol = real.volume("inc", 256 * MIB)
    regions = [(i * 16 * MIB, 4 * MIB) for i in range(16)]  # 64 MiB of random data
    fill(vol, regions, seed=10)
    subprocess.run(["qemu-io", "-f", "qcow2", vol.path(), "-c", "write -z 200M 8M"],
                   check=True, capture_output=True)  # allocated zeros: never sent
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", vol.path()],
                                     capture_output=True, check=True).stdout)
    assert info["format-specific"]["data"]["compat"] == "1.1"
    dom = real.domain("inc", [vol])
    seen = []
    full = backup_domain(dom, real.target.open_write("inc-0.hvpbak"),
                         vm_record={"id": "vm-inc"}, archive_name="inc-0.hvpbak",
                         progress=lambda done, total: seen.append((done, total)))
    assert full.kind == "full" and full.fallback_reason is None
    assert full.data_bytes == 64 * MIB and full.size > 64 * MIB  # random data: no gain
    assert seen[-1][0] == seen[-1][1] == 64 * MIB
    assert not backup_job_running(dom) and panel_checkpoints(dom) == [full.checkpoint]

    changes = [(i * 16 * MIB + MIB, 400 * 1024) for i in range(16)]  # 6.25 MiB, ~10%
    live_write(real, dom, changes, seed=11)
    inc = backup_domain(dom, real.target.open_write("inc-1.hvpbak"),
                        parent=ParentBackup("inc-0.hvpbak", full.checkpoint),
                        archive_name="inc-1.hvpbak")
    assert inc.kind == "incremental" and inc.parent == {"archive": "inc-0.hvpbak",
                                                        "checkpoint": full.checkpoint}
    assert inc.size < 0.15 * full.size, (inc.size, full.size)
    assert panel_checkpoints(dom) == [inc.checkpoint]  # only what the next one needs
    print(f"\nFULL {full.size} B in {full.seconds}s; INCREMENTAL {inc.size} B in "
          f"{inc.seconds}s ({inc.data_bytes} B changed data)")

    dom.destroy()  # the disk now holds what the incremental saw
    volumes = restore(real, ["inc-0.hvpbak", "inc-1.hvpbak"], ["vda"])
    restored = volumes["vda"]
    assert restored.format == "qcow2" and restored.capacity == 256 * MIB
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", restored.path],
                                     capture_output=True, check=True).stdout)
    assert info["format-specific"]["data"]["compat"] == "1.1"
    assert info["actual-size"] < 100 * MIB  # sparse
    assert same_content(vol.path(), restored.path)
    assert not same_content(restored.path, restore(real, ["inc-0.hvpbak"], ["vda"])["vda"].path)
    assert not [f for f in pool_files(real) if ".restore-" in f or "scratch" in f]
    # The node is this machine: the qcow2 is written once through qemu-nbd, no raw copy.
    direct = restore(real, ["inc-0.hvpbak", "inc-1.hvpbak"], ["vda"], local=True)["vda"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", direct.path],
                                     capture_output=True, check=True).stdout)
    assert direct.format == "qcow2" and info["format-specific"]["data"]["compat"] == "1.1"
    assert info["actual-size"] < 100 * MIB and same_content(vol.path(), direct.path)
    assert not [f for f in pool_files(real) if ".restore-" in f]


@pytest.mark.slow
def test_a_local_restore_without_qemu_nbd_falls_back_to_the_raw_copy(real: Real, monkeypatch):
    vol = real.volume("nonbd", 64 * MIB)
    fill(vol, [(0, 4 * MIB), (32 * MIB, 4 * MIB)], seed=12)
    dom = real.domain("nonbd", [vol], start=False)
    backup_domain(dom, real.target.open_write("nonbd.hvpbak"))
    monkeypatch.setattr(qcow2_fill, "QEMU_NBD", "hvp-no-such-qemu-nbd")  # forced missing
    restored = restore(real, ["nonbd.hvpbak"], ["vda"], local=True)["vda"]
    assert restored.format == "qcow2" and same_content(vol.path(), restored.path)
    assert not [f for f in pool_files(real) if ".restore-" in f]
    before = pool_files(real)
    monkeypatch.setattr(qcow2_fill, "QEMU_NBD", "false")  # a qemu-nbd that dies at once
    with pytest.raises(BackupError, match="qemu-nbd"):
        restore(real, ["nonbd.hvpbak"], ["vda"], local=True)
    assert pool_files(real) == before  # the new volume was deleted again


def blocks_of(path: str, tmp: Path) -> list[bytes]:
    raw = tmp / "blocks.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", path, str(raw)], check=True)
    with open(raw, "rb") as fh:
        out = [fh.read(BLOCK) for _ in range(WRITER_BLOCKS)]
    raw.unlink()
    return out


def wrote(console: str) -> int:
    found = re.findall(r"HVP-WROTE (\d+)", console)
    return int(found[-1]) if found else 0


@pytest.mark.slow
def test_a_running_guest_is_backed_up_while_it_writes_point_in_time(real: Real,
                                                                    tmp_path: Path):
    busy, still = real.volume("busy", 64 * MIB), real.volume("still", 32 * MIB)
    fill(still, [(0, 3 * MIB), (20 * MIB, MIB)], seed=20)
    initrd = real.files / "writer-initrd.img"
    initrd.write_bytes(Path(real.assets.initrd).read_bytes() +
                       newc({"init": WRITER_INIT.encode()}))
    initrd.chmod(0o644)
    dom = real.domain("busy", [busy, still], initrd=str(initrd))
    console = wait_for_serial(real.serial(dom), "HVP-WROTE 300", timeout=120)
    before = wrote(console)
    result = backup_domain(dom, real.target.open_write("busy-0.hvpbak"))
    after = wrote(real.serial(dom).read_text(errors="replace"))
    assert result.kind == "full" and [d["target"] for d in result.disks] == ["vda", "vdb"]
    wait_for_serial(real.serial(dom), f"HVP-WROTE {after + 20}", timeout=60)  # still writing
    assert dom.isActive() and not backup_job_running(dom)

    volumes = restore(real, ["busy-0.hvpbak"], ["vda", "vdb"])
    assert same_content(still.path(), volumes["vdb"].path)  # the disk nobody wrote: identical
    blocks = blocks_of(volumes["vda"].path, tmp_path)
    numbers = [int(b[10:b.index(b"-", 10)]) for b in blocks if b.startswith(b"HVP-BLOCK-")]
    assert len(numbers) == WRITER_BLOCKS  # every block complete, none torn or missing
    last = max(numbers)
    assert before <= last <= after + 1, (before, last, after)
    for k, block in enumerate(blocks):  # exactly the disk after write number ``last``
        i = last - (last - k) % WRITER_BLOCKS
        assert block == (f"HVP-BLOCK-{i}-\n" * BLOCK).encode()[:BLOCK], (k, i, block[:32])
    dom.destroy()


class _Unbindable(NbdServer):
    """A socket path in a folder that does not exist: QEMU's bind fails for real."""

    def socket_path(self, token: str) -> str | None:
        return f"/nonexistent-hvp-{token}/hvp-nbd-{token}.sock"


@pytest.mark.slow
def test_the_export_is_a_unix_socket_here_and_tcp_when_qemu_cannot_make_one(real: Real):
    vol = real.volume("sock", 64 * MIB)
    fill(vol, [(0, 4 * MIB), (40 * MIB, 4 * MIB)], seed=35)
    dom = real.domain("sock", [vol])
    seen: list[str] = []
    original = vm_backup.connect

    def spy(host, port, export, bitmap=None, socket=None):
        seen.append(socket or f"{host}:{port}")
        return original(host, port, export, bitmap, socket)

    vm_backup.connect = spy
    try:
        full = backup_domain(dom, real.target.open_write("sock-0.hvpbak"),
                             nbd_server=NbdServer(socket_dir=LOCAL_SOCKET_DIR))
        assert seen[-1].startswith(LOCAL_SOCKET_DIR + "/hvp-nbd-"), seen
        assert not os.path.exists(seen[-1])  # gone with the job
        # A socket QEMU cannot make (whatever user it runs as): the export falls back to TCP.
        inc = backup_domain(dom, real.target.open_write("sock-1.hvpbak"),
                            parent=ParentBackup("sock-0.hvpbak", full.checkpoint),
                            nbd_server=_Unbindable(socket_dir=LOCAL_SOCKET_DIR))
        assert seen[-1].startswith("127.0.0.1:"), seen
        assert inc.kind == "incremental"
        assert any("NBD over TCP" in w for w in inc.warnings), inc.warnings
    finally:
        vm_backup.connect = original
    dom.destroy()
    restored = restore(real, ["sock-0.hvpbak", "sock-1.hvpbak"], ["vda"], local=True)["vda"]
    assert same_content(vol.path(), restored.path)


@pytest.mark.slow
def test_a_stopped_vm_is_backed_up_paused_and_stays_stopped(real: Real):
    vol, raw = real.volume("off", 128 * MIB), real.volume("offraw", 16 * MIB, "raw")
    fill(vol, [(0, 8 * MIB), (100 * MIB, 4 * MIB)], seed=30)
    with open(raw.path(), "r+b") as fh:  # a raw disk: no bitmap, in full every time
        fh.seek(MIB)
        fh.write(random.Random(31).randbytes(MIB))
    dom = real.domain("off", [vol, raw], start=False)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    full = backup_domain(dom, real.target.open_write("off-0.hvpbak"))
    assert full.kind == "full" and full.data_bytes == 13 * MIB
    assert any("stopped" in w for w in full.warnings)
    assert not dom.isActive() and dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == xml
    assert panel_checkpoints(dom) == [full.checkpoint]  # checkpoints survive the stop
    subprocess.run(["qemu-io", "-f", "qcow2", vol.path(), "-c",
                    "write -P 0x5a 50M 1M", "-c", "write -z 100M 1M"],
                   check=True, capture_output=True)  # offline writes: tracked too
    inc = backup_domain(dom, real.target.open_write("off-1.hvpbak"),
                        parent=ParentBackup("off-0.hvpbak", full.checkpoint))
    assert inc.kind == "incremental" and not dom.isActive()
    assert [(d["target"], d["mode"], d["data_bytes"]) for d in inc.disks] == \
        [("vda", "incremental", MIB), ("vdb", "full", MIB)]
    assert inc.disks[0]["zero_bytes"] == MIB  # the zeroed MiB: restored as zeros
    volumes = restore(real, ["off-0.hvpbak", "off-1.hvpbak"], ["vda", "vdb"])
    assert same_content(vol.path(), volumes["vda"].path)
    assert same_content(raw.path(), volumes["vdb"].path)


@pytest.mark.slow
def test_a_tampered_archive_is_refused_and_nothing_is_written(real: Real):
    vol = real.volume("tamper", 64 * MIB)
    fill(vol, [(0, 8 * MIB)], seed=40)
    dom = real.domain("tamper", [vol], start=False)
    backup_domain(dom, real.target.open_write("tamper.hvpbak"))
    path = real.target.root / "tamper.hvpbak"
    manifest = read_manifest(real.target, "tamper.hvpbak")
    disk = next(p for p in manifest["parts"] if p["kind"] == "disk")
    blob = bytearray(path.read_bytes())
    blob[disk["stored_offset"] + disk["stored_length"] // 2] ^= 0x40
    path.write_bytes(bytes(blob))
    with pytest.raises(ArchiveDamaged, match="vda"):
        verify_archive(real.target, "tamper.hvpbak")
    real.pool.refresh(0)
    volumes_before = set(real.pool.listVolumes())
    for verify_first, local in ((True, False), (False, False), (False, True)):
        with pytest.raises(ArchiveDamaged):
            restore(real, ["tamper.hvpbak"], ["vda"], verify_first=verify_first, local=local)
        real.pool.refresh(0)
        assert set(real.pool.listVolumes()) == volumes_before  # nothing left behind


@pytest.mark.slow
def test_a_lost_checkpoint_falls_back_to_a_full_backup_and_says_why(real: Real):
    vol = real.volume("lost", 64 * MIB)
    fill(vol, [(0, 4 * MIB)], seed=50)
    dom = real.domain("lost", [vol])
    full = backup_domain(dom, real.target.open_write("lost-0.hvpbak"))
    dom.checkpointLookupByName(full.checkpoint).delete(0)  # lost (or the VM moved node)
    again = backup_domain(dom, real.target.open_write("lost-1.hvpbak"),
                          parent=ParentBackup("lost-0.hvpbak", full.checkpoint))
    assert again.kind == "full" and again.parent is None
    assert full.checkpoint in again.fallback_reason and "missing" in again.fallback_reason
    assert read_manifest(real.target, "lost-1.hvpbak")["fallback_reason"] == \
        again.fallback_reason
    assert again.data_bytes == 4 * MIB and panel_checkpoints(dom) == [again.checkpoint]

    # The disk swapped for a restored one: the checkpoint's bitmap went with the old image.
    restored = restore(real, ["lost-1.hvpbak"], ["vda"])["vda"]
    dom.destroy()
    dom = real.conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
                              .replace(vol.path(), restored.path))
    dom.create()
    third = backup_domain(dom, real.target.open_write("lost-2.hvpbak"),
                          parent=ParentBackup("lost-1.hvpbak", again.checkpoint))
    assert third.kind == "full" and again.checkpoint in third.fallback_reason, third
    assert any("only libvirt's record" in w for w in third.warnings)  # stale one dropped
    assert panel_checkpoints(dom) == [third.checkpoint]


@pytest.mark.slow
def test_a_failure_in_the_middle_leaves_no_job_checkpoint_or_partial(real: Real):
    vol = real.volume("fail", 128 * MIB)
    fill(vol, [(0, 32 * MIB)], seed=60)
    dom = real.domain("fail", [vol])
    full = backup_domain(dom, real.target.open_write("fail-0.hvpbak"))
    live_write(real, dom, [(MIB, 16 * MIB)], seed=61)
    real.target.fail_after = 4 * MIB
    try:
        writer = real.target.open_write("fail-1.hvpbak")
        with pytest.raises(Exception, match="full after"):
            backup_domain(dom, writer, parent=ParentBackup("fail-0.hvpbak", full.checkpoint))
    finally:
        real.target.fail_after = None
    assert writer.aborted and not real.target.list_partial()
    assert real.target.stat("fail-1.hvpbak") is None
    assert not backup_job_running(dom) and panel_checkpoints(dom) == [full.checkpoint]
    assert not [f for f in pool_files(real) if "scratch" in f]
    cancelled = backup_domain  # a cancelled backup cleans up the same way
    with pytest.raises(Exception, match="cancelled"):
        cancelled(dom, real.target.open_write("fail-2.hvpbak"),
                  parent=ParentBackup("fail-0.hvpbak", full.checkpoint),
                  cancelled=lambda: True)
    assert panel_checkpoints(dom) == [full.checkpoint] and not real.target.list_partial()
    retry = backup_domain(dom, real.target.open_write("fail-1.hvpbak"),
                          parent=ParentBackup("fail-0.hvpbak", full.checkpoint))
    assert retry.kind == "incremental" and retry.data_bytes == 16 * MIB
    assert panel_checkpoints(dom) == [retry.checkpoint]


@pytest.mark.slow
def test_a_qcow2_v2_disk_is_backed_up_in_full_every_time_with_a_warning(real: Real):
    real.pool.refresh(0)
    name = f"old-{real.tag}.qcow2"
    path = f"{real.backend.options['path']}/{name}"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10", path, "64M"],
                   check=True, capture_output=True)
    real.pool.refresh(0)
    vol = real.pool.storageVolLookupByName(name)
    fill(vol, [(0, 2 * MIB)], seed=70)
    dom = real.domain("old", [vol])
    first = backup_domain(dom, real.target.open_write("old-0.hvpbak"))
    assert first.checkpoint is None and any("compat 0.10" in w for w in first.warnings)
    second = backup_domain(dom, real.target.open_write("old-1.hvpbak"),
                           parent=ParentBackup("old-0.hvpbak", "hvp-none"))
    assert second.kind == "full" and second.data_bytes == 2 * MIB
    assert panel_checkpoints(dom) == []


KILLED_BACKUP = """
import os, sys
import libvirt
from hypervisor_panel.backups.vm_backup import backup_domain
from tests.support.dir_target import DirTarget, DirWriter

class Killed(DirWriter):
    def write(self, data):
        super().write(data)
        if self.written > 2 * 1024 * 1024:
            os.kill(os.getpid(), 9)  # the panel is SIGKILLed in the middle of the upload

name, folder = sys.argv[1], sys.argv[2]
dom = libvirt.open("qemu:///system").lookupByName(name)
target = DirTarget({"id": "t", "name": "t", "backend": "test-dir", "options": {"path": folder}})
target.root.mkdir(parents=True, exist_ok=True)
backup_domain(dom, Killed(target.root, "killed.hvpbak"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("running", [True, False], ids=["running", "stopped"])
def test_a_panel_killed_during_a_backup_leaves_nothing_blocking_the_next(real: Real,
                                                                        running: bool):
    vol = real.volume(f"kill{int(running)}", 64 * MIB)
    fill(vol, [(0, 16 * MIB)], seed=80)
    dom = real.domain(f"kill{int(running)}", [vol], start=running)
    proc = subprocess.run([sys.executable, "-c", KILLED_BACKUP, dom.name(),
                           str(real.target.root)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert real.target.stat("killed.hvpbak") is None  # only a partial, never listed
    real.target.delete_partial("killed.hvpbak")
    if running:
        assert backup_job_running(dom)  # a pull job outlives its client
    else:  # the paused helper had AUTODESTROY: it died with the killed panel's connection
        deadline = time.monotonic() + 30
        while dom.isActive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not dom.isActive()
    assert len(panel_checkpoints(dom)) == 1  # the killed run's checkpoint
    result = backup_domain(dom, real.target.open_write(f"after-kill-{int(running)}.hvpbak"))
    assert result.kind == "full" and result.data_bytes == 16 * MIB
    assert dom.isActive() == running and not backup_job_running(dom)
    assert panel_checkpoints(dom) == [result.checkpoint]  # the stale one was removed
    if running:
        assert any("interrupted" in w for w in result.warnings)
    assert not [f for f in pool_files(real) if "scratch" in f]


@pytest.mark.slow
def test_an_rbd_disk_is_backed_up_in_full_and_restored_into_a_new_image(real: Real):
    from hypervisor_panel_plugins.storage_rbd.backend import RBDStorage

    from tests.support.ceph import start_ceph, stop_ceph

    work = Path(tempfile.mkdtemp(prefix="hvpceph-", dir="/tmp"))
    ceph = start_ceph(work)
    backend = RBDStorage({"name": f"bkrbd-{real.tag}", "options": {
        "monitors": [ceph.mon_addr], "pool": ceph.pool, "user": ceph.libvirt_user,
        "key": ceph.libvirt_key}})
    dom = None
    try:
        backend.ensure_pool(real.conn)
        vol = backend.create_volume(real.conn, f"src-{real.tag}", 64 * MIB)
        source = real.files / "rbd-src.raw"
        with open(source, "wb") as fh:
            fh.truncate(64 * MIB)
            fh.seek(8 * MIB)
            fh.write(random.Random(90).randbytes(6 * MIB))
        subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(source),
                        ceph.rbd_spec(vol.name())], check=True, capture_output=True)
        builder = DomainBuilder(
            name=f"hvp-bk-rbd-{real.tag}", uuid=str(uuid.uuid4()), domain_type="qemu",
            memory_mib=128, vcpus=1, kernel=str(real.assets.kernel),
            initrd=str(real.assets.initrd), cmdline="console=ttyS0 quiet",
            disks=[backend.disk(vol, "vda")])
        dom = real.conn.defineXML(builder.to_xml())
        real.domains.append(dom)
        dom.create()
        result = backup_domain(dom, real.target.open_write("rbd.hvpbak"),
                               scratch_dir=str(real.files))
        assert result.kind == "full" and result.checkpoint is None  # raw: no bitmaps
        assert result.disks[0]["format"] == "raw"  # RBD allocates whole 4 MiB objects:
        assert result.data_bytes == 8 * MIB and result.size < 7 * MIB  # zeros compress
        assert not backup_job_running(dom)
        assert not [f for f in os.listdir(real.files) if "scratch" in f]  # libvirt removed it
        dom.destroy()
        volumes = restore_chain(real.conn, [ArchiveRef(real.target, "rbd.hvpbak")],
                                {"vda": DiskPlacement(backend, f"restored-{real.tag}")}).volumes
        assert volumes["vda"].name == f"restored-{real.tag}"
        assert same_content(ceph.rbd_spec(vol.name()), ceph.rbd_spec(volumes["vda"].name))
        # The restored image stays thin: the 56 MiB of holes take no objects.
        with backend._image(volumes["vda"].name) as image:
            used: list[int] = []
            image.diff_iterate(0, image.size(), None,
                               lambda _off, length, exists: used.append(length if exists else 0))
        assert sum(used) <= 8 * MIB, used
    finally:
        if dom is not None:
            with contextlib.suppress(libvirt.libvirtError):
                real.remove(dom)
                real.domains.remove(dom)
        with contextlib.suppress(Exception):
            for name in backend.pool(real.conn).listVolumes():
                backend.delete_volume(real.conn, name)
        with contextlib.suppress(Exception):
            backend.remove_pool(real.conn)
        stop_ceph(work)
        shutil.rmtree(work, ignore_errors=True)
