"""Manual proof that libvirt's rbd storage pool works against a real Ceph cluster.

Run: ``.venv/bin/python tests/support/try_ceph.py [--uri URI] [--keep]`` (as root, with
the Ceph packages and libvirt-daemon-driver-storage-rbd installed and a libvirtd that
was started AFTER that driver was installed).

It bootstraps a single-node cephx cluster in a temporary folder (scripts/services/ceph.sh),
checks that a second start is a no-op, then through libvirt-python: defines a ceph
secret, defines + starts an rbd pool authenticated as client.libvirt, creates a raw
volume, writes bytes to it with qemu-io (QEMU's rbd driver, as client.libvirt), clones
it with ``createXMLFrom`` (checks with ``rbd info`` that the clone has a parent and reads
the base's bytes through it), deletes clone and base, and measures how libvirt fails
with a wrong key and with a monitor port where nothing listens (default timeouts and
``<rbd:config_opts>`` overrides). Everything is cleaned up; it then stops the cluster
and checks that no ceph daemon of it is left. Prints a timing table.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would come first on sys.path and its modules could
# shadow the standard library: import through the repository root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parents[1]))

import argparse  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from xml.sax.saxutils import quoteattr  # noqa: E402

import libvirt  # noqa: E402

from tests.support.ceph import CephCluster, start_ceph, stop_ceph  # noqa: E402
from tests.support.realvirt import SYSTEM_URI, ensure_libvirtd  # noqa: E402

PREFIX = "hvp-try-rbd"
SECRET_USAGE = "client.libvirt secret HVPTEST"
WRONG_SECRET_USAGE = "client.libvirt secret HVPTEST-WRONG"
RBD_NS = "http://libvirt.org/schemas/storagepool/rbd/1.0"
BASE_VOL = f"{PREFIX}-base"
CLONE_VOL = f"{PREFIX}-clone"
VOL_MIB = 16
PAYLOAD = b"HVP-RBD-PAYLOAD-" + uuid.uuid4().hex.encode()  # 48 bytes
CLONE_PAYLOAD = b"HVP-CLONE-ONLY-" + uuid.uuid4().hex.encode()
CLONE_OFFSET = 1 << 20

TIMINGS: list[tuple[str, float, str]] = []


@contextlib.contextmanager
def timed(label: str, note: str = "") -> Iterator[None]:
    """Record how long the block took under ``label``."""
    start = time.monotonic()
    try:
        yield
    finally:
        TIMINGS.append((label, time.monotonic() - start, note))


def run(
    cmd: list[str], *, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({proc.returncode}): {proc.stdout} {proc.stderr}")
    return proc


def free_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secret_xml(usage: str) -> str:
    return (
        "<secret ephemeral='no' private='yes'>"
        f"<usage type='ceph'><name>{usage}</name></usage></secret>"
    )


def pool_xml(
    name: str,
    port: int,
    secret_uuid: str | None,
    *,
    user: str = "libvirt",
    options: dict[str, str] | None = None,
) -> str:
    """XML of an rbd pool on the ``rbd`` Ceph pool; ``options`` go to <rbd:config_opts>."""
    auth = (
        f"<auth type='ceph' username={quoteattr(user)}><secret uuid='{secret_uuid}'/></auth>"
        if secret_uuid
        else ""
    )
    opts = ""
    if options:
        opts = (
            "<rbd:config_opts>"
            + "".join(
                f"<rbd:option name={quoteattr(k)} value={quoteattr(v)}/>"
                for k, v in options.items()
            )
            + "</rbd:config_opts>"
        )
    return f"""<pool type='rbd' xmlns:rbd='{RBD_NS}'>
  <name>{name}</name>
  <source>
    <name>rbd</name>
    <host name='127.0.0.1' port='{port}'/>
    {auth}
  </source>
  {opts}
</pool>"""


def vol_xml(name: str, mib: int = VOL_MIB) -> str:
    return (
        f"<volume><name>{name}</name><capacity unit='MiB'>{mib}</capacity>"
        "<target><format type='raw'/></target></volume>"
    )


def cleanup_libvirt(conn: libvirt.virConnect) -> None:
    """Remove every pool and secret this script may have left behind."""
    for pool in conn.listAllStoragePools():
        if pool.name().startswith(PREFIX):
            with contextlib.suppress(libvirt.libvirtError):
                if pool.isActive():
                    pool.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                pool.undefine()
    for usage in (SECRET_USAGE, WRONG_SECRET_USAGE):
        with contextlib.suppress(libvirt.libvirtError):
            conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_CEPH, usage).undefine()


def check_rbd_supported(conn: libvirt.virConnect) -> None:
    caps = conn.getStoragePoolCapabilities(0)
    if "<pool type='rbd' supported='yes'>" not in caps:
        raise SystemExit(
            "libvirtd does not support rbd pools: install libvirt-daemon-driver-storage-rbd and "
            "RESTART libvirtd (it loads storage back ends only at start-up): "
            "scripts/services/libvirtd.sh restart"
        )


def rbd_info(cluster: CephCluster, image: str) -> dict:
    proc = run(["rbd", "--conf", str(cluster.conf), "info", "--format", "json", f"rbd/{image}"])
    return json.loads(proc.stdout)


def rbd_snaps(cluster: CephCluster, image: str) -> list[dict]:
    proc = run(
        [
            "rbd",
            "--conf",
            str(cluster.conf),
            "snap",
            "ls",
            "--all",
            "--format",
            "json",
            f"rbd/{image}",
        ]
    )
    return json.loads(proc.stdout)


def qemu_io_write(
    cluster: CephCluster, image: str, data: bytes, offset: int, workdir: Path
) -> None:
    """Write ``data`` at ``offset`` with QEMU's rbd driver, authenticated as client.libvirt."""
    src = workdir / f"payload-{uuid.uuid4().hex}.bin"
    src.write_bytes(data)
    spec = cluster.rbd_spec(image, user=cluster.libvirt_user)
    run(["qemu-io", "-f", "raw", "-c", f"write -q -s {src} {offset} {len(data)}", spec])
    src.unlink()


def rbd_export_read(cluster: CephCluster, image: str, offset: int, length: int) -> bytes:
    """Read bytes back with the rbd CLI (client.admin)."""
    proc = subprocess.run(
        ["rbd", "--conf", str(cluster.conf), "export", "--no-progress", f"rbd/{image}", "-"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return proc.stdout[offset : offset + length]


def python_rbd_read(cluster: CephCluster, image: str, offset: int, length: int) -> bytes:
    """Read bytes back with Debian's python3-rbd bindings, as client.libvirt."""
    import rados
    import rbd

    with (
        rados.Rados(
            conffile=str(cluster.conf),
            rados_id=cluster.libvirt_user,
            conf={"key": cluster.libvirt_key},
        ) as client,
        client.open_ioctx("rbd") as ioctx,
        rbd.Image(ioctx, image, read_only=True) as img,
    ):
        return img.read(offset, length)


def probe_pool(conn: libvirt.virConnect, label: str, xml: str, expect_ok: bool = False) -> bool:
    """Define + start a pool; record how long the start took and how it failed.

    Returns True when the outcome is the expected one (started iff ``expect_ok``).
    """
    name = f"{PREFIX}-{label}"
    pool = conn.storagePoolDefineXML(
        xml.replace(f"<name>{PREFIX}</name>", f"<name>{name}</name>"), 0
    )
    start = time.monotonic()
    started = False
    try:
        pool.create(0)
        started = True
        outcome = "started"
    except libvirt.libvirtError as exc:
        outcome = f"[code {exc.get_error_code()}, domain {exc.get_error_domain()}] {exc}"
    elapsed = time.monotonic() - start
    with contextlib.suppress(libvirt.libvirtError):
        if pool.isActive():
            pool.destroy()
    pool.undefine()
    as_expected = started == expect_ok
    tag = "OK  " if expect_ok else "FAIL"
    TIMINGS.append(
        (f"{tag} {label}", elapsed, outcome if as_expected else f"UNEXPECTED: {outcome}")
    )
    return as_expected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default=os.environ.get("HVP_CEPH_LIBVIRT_URI", SYSTEM_URI))
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    parser.add_argument(
        "--skip-default-timeouts",
        action="store_true",
        help="skip the slow failure probes that use libvirt's 30 s defaults",
    )
    args = parser.parse_args()

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stderr noise
    if args.uri == SYSTEM_URI:
        ensure_libvirtd()
    conn = libvirt.open(args.uri)
    check_rbd_supported(conn)
    cleanup_libvirt(conn)

    # Short path: admin sockets live under it (UNIX socket paths max 107 bytes).
    workdir = Path(tempfile.mkdtemp(prefix="hvp-ceph-"))
    cdir = workdir / "ceph"
    ok = False
    ok_probes = True
    try:
        with timed("ceph bootstrap (ceph.sh start)"):
            cluster = start_ceph(cdir)
        print(
            f"cluster {cluster.fsid} mon v1 {cluster.mon_port} v2 {cluster.mon_port_v2} in {cdir}"
        )
        with timed("ceph.sh start again (no-op)"):
            again = start_ceph(cdir)
        assert again == cluster, f"second start changed the cluster: {again} != {cluster}"
        health = run(["ceph", "--conf", str(cluster.conf), "health"]).stdout.strip()
        print(f"health: {health}")

        # Secret holding client.libvirt's key (raw bytes, not base64).
        with timed("secret define + setValue"):
            secret = conn.secretDefineXML(secret_xml(SECRET_USAGE), 0)
            secret.setValue(base64.b64decode(cluster.libvirt_key), 0)
        secret_uuid = secret.UUIDString()

        with timed("pool define"):
            pool = conn.storagePoolDefineXML(pool_xml(PREFIX, cluster.mon_port, secret_uuid), 0)
        with timed("pool start (create)"):
            pool.create(0)
        info = pool.info()
        print(f"pool state {info[0]} capacity {info[1]} allocation {info[2]} available {info[3]}")
        assert info[1] > 0, "pool capacity 0: no stats from the cluster?"

        with timed(f"vol create raw {VOL_MIB} MiB"):
            base = pool.createXML(vol_xml(BASE_VOL), 0)
        print(f"base volume: path {base.path()} key {base.key()} info {base.info()}")
        assert base.path() == f"rbd/{BASE_VOL}", base.path()

        with timed("write bytes (qemu-io, client.libvirt)"):
            qemu_io_write(cluster, BASE_VOL, PAYLOAD, 0, workdir)
        with timed("read back (rbd export, client.admin)"):
            got = rbd_export_read(cluster, BASE_VOL, 0, len(PAYLOAD))
        assert got == PAYLOAD, f"read back {got!r}, wrote {PAYLOAD!r}"

        with timed("vol clone (createXMLFrom)"):
            clone = pool.createXMLFrom(vol_xml(CLONE_VOL), base, 0)
        cinfo = rbd_info(cluster, CLONE_VOL)
        parent = cinfo.get("parent")
        print(f"clone rbd info parent: {parent}")
        assert parent and parent.get("image") == BASE_VOL, f"clone has no parent: {cinfo}"
        snaps = rbd_snaps(cluster, BASE_VOL)
        print(f"base snapshots: {[(s['name'], s.get('protected')) for s in snaps]}")

        with timed("read through clone (python3-rbd, client.libvirt)"):
            got = python_rbd_read(cluster, CLONE_VOL, 0, len(PAYLOAD))
        assert got == PAYLOAD, f"clone shows {got!r}, base has {PAYLOAD!r}"
        qemu_io_write(cluster, CLONE_VOL, CLONE_PAYLOAD, CLONE_OFFSET, workdir)
        assert (
            python_rbd_read(cluster, CLONE_VOL, CLONE_OFFSET, len(CLONE_PAYLOAD)) == CLONE_PAYLOAD
        )
        assert python_rbd_read(cluster, BASE_VOL, CLONE_OFFSET, len(CLONE_PAYLOAD)) == bytes(
            len(CLONE_PAYLOAD)
        ), "a write to the clone reached the base"

        with timed("pool refresh + list volumes"):
            pool.refresh(0)
            names = sorted(v.name() for v in pool.listAllVolumes(0))
        assert names == sorted([BASE_VOL, CLONE_VOL]), names

        # Deleting the base first fails: it has a protected snapshot with a child.
        start = time.monotonic()
        try:
            base.delete(0)
            raise AssertionError("deleting the parent of a clone succeeded")
        except libvirt.libvirtError as exc:
            TIMINGS.append(
                ("FAIL delete base w/o flag (clone exists)", time.monotonic() - start, str(exc))
            )

        with timed("vol delete clone"):
            clone.delete(0)
        start = time.monotonic()
        try:
            base.delete(0)
            raise AssertionError("deleting a volume with snapshots without the flag succeeded")
        except libvirt.libvirtError as exc:
            TIMINGS.append(
                ("FAIL delete base w/o WITH_SNAPSHOTS", time.monotonic() - start, str(exc))
            )
        with timed("vol delete base (WITH_SNAPSHOTS)"):
            base.delete(libvirt.VIR_STORAGE_VOL_DELETE_WITH_SNAPSHOTS)
        pool.refresh(0)
        assert pool.listAllVolumes(0) == [], "volumes left"
        left = run(["rbd", "--conf", str(cluster.conf), "ls", "rbd"]).stdout.split()
        assert left == [], f"rbd images left: {left}"

        with timed("pool destroy + undefine"):
            pool.destroy()
            pool.undefine()

        # ---- failure modes: wrong key, garbage key, nobody on the port.
        wrong_key = run(["ceph-authtool", "--gen-print-key"]).stdout.strip()
        bad = conn.secretDefineXML(secret_xml(WRONG_SECRET_USAGE), 0)
        bad.setValue(base64.b64decode(wrong_key), 0)
        dead_port = free_port()
        port = cluster.mon_port
        v1_mon = f"v1:127.0.0.1:{port}"
        fast = {
            "client_mount_timeout": "5",
            "rados_mon_op_timeout": "5",
            "rados_osd_op_timeout": "5",
        }
        good, wrong = secret_uuid, bad.UUIDString()
        # (label, pool XML, should it start?)
        probes: list[tuple[str, str, bool]] = [
            # libvirt builds mon_host='127.0.0.1:PORT,' (no v1:/v2: prefix): librados then
            # tries msgr2 AND v1 on that port and does not give up on an auth error.
            ("wrongkey-timeout5", pool_xml(PREFIX, port, wrong, options=fast), False),
            (
                "unknownuser-timeout5",
                pool_xml(PREFIX, port, good, user="nosuchuser", options=fast),
                False,
            ),
            ("noauth-timeout5", pool_xml(PREFIX, port, None, options=fast), False),
            ("deadport-timeout5", pool_xml(PREFIX, dead_port, good, options=fast), False),
            # An explicit v1: address (config_opts override libvirt's mon_host): a wrong key
            # is refused at once.
            (
                "goodkey-mon_host-v1",
                pool_xml(PREFIX, port, good, options={**fast, "mon_host": v1_mon}),
                True,
            ),
            (
                "wrongkey-mon_host-v1",
                pool_xml(PREFIX, port, wrong, options={**fast, "mon_host": v1_mon}),
                False,
            ),
            (
                "unknownuser-mon_host-v1",
                pool_xml(
                    PREFIX, port, good, user="nosuchuser", options={**fast, "mon_host": v1_mon}
                ),
                False,
            ),
            (
                "noauth-mon_host-v1",
                pool_xml(PREFIX, port, None, options={**fast, "mon_host": v1_mon}),
                False,
            ),
            (
                "deadport-mon_host-v1",
                pool_xml(
                    PREFIX,
                    dead_port,
                    good,
                    options={**fast, "mon_host": f"v1:127.0.0.1:{dead_port}"},
                ),
                False,
            ),
            # The msgr2 port given as a bare host:port works as well.
            ("goodkey-v2port", pool_xml(PREFIX, cluster.mon_port_v2, good, options=fast), True),
            # A host name carrying the v1: prefix (libvirt passes it through as is).
            (
                "goodkey-hostname-v1prefix",
                pool_xml(PREFIX, port, good, options=fast).replace(
                    "<host name='127.0.0.1'", "<host name='v1:127.0.0.1'"
                ),
                True,
            ),
            (
                "wrongkey-hostname-v1prefix",
                pool_xml(PREFIX, port, wrong, options=fast).replace(
                    "<host name='127.0.0.1'", "<host name='v1:127.0.0.1'"
                ),
                False,
            ),
        ]
        if not args.skip_default_timeouts:
            probes += [
                ("wrongkey-default", pool_xml(PREFIX, port, wrong), False),
                ("deadport-default", pool_xml(PREFIX, dead_port, good), False),
            ]
        for label, xml, expect_ok in probes:
            print(f"probing {label} ...", flush=True)
            try:
                if not probe_pool(conn, label, xml, expect_ok):
                    ok_probes = False
            except libvirt.libvirtError as exc:  # e.g. the XML itself is refused
                TIMINGS.append((f"XML  {label}", 0.0, f"define refused: {exc}"))
        bad.undefine()

        with timed("secret undefine"):
            secret.undefine()
        ok = ok_probes
    finally:
        cleanup_libvirt(conn)
        with timed("ceph.sh stop"):
            stop_ceph(cdir)
        leftovers = run(["pgrep", "-af", f"ceph-.*{cdir}"], check=False).stdout.strip()
        if leftovers:
            print(f"LEFTOVER ceph processes:\n{leftovers}")
            ok = False
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir} (logs in {cdir / 'log'})")
        conn.close()

    print("\n== timings ==")
    for label, secs, note in TIMINGS:
        print(f"{label:45s} {secs:7.2f}s  {note}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
