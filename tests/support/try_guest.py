"""Manual proof that a real TCG guest boots, prints its marker and powers off on ACPI.

Run: ``.venv/bin/python tests/support/try_guest.py`` (as root, libvirt installed).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would come first on sys.path and its modules (e.g.
# http.py) would shadow the standard library: import through the repository root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parents[1]))

import time  # noqa: E402
from xml.sax.saxutils import escape  # noqa: E402

import libvirt  # noqa: E402

from tests.support.guest import POWEROFF_MARKER, UPTIME_PREFIX, build_guest_assets  # noqa: E402
from tests.support.realvirt import REPO_ROOT, ensure_libvirtd, wait_for_serial  # noqa: E402

NAME = "hvp-try-guest"
CACHE_DIR = REPO_ROOT / ".cache" / "guest"


def domain_xml(name: str, kernel: Path, initrd: Path, serial_log: Path) -> str:
    """XML of a transient 128 MiB TCG guest booting ``kernel``/``initrd`` directly."""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <features><acpi/></features>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(kernel))}</kernel>
    <initrd>{escape(str(initrd))}</initrd>
    <cmdline>console=ttyS0</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <serial type='pty'><log file='{escape(str(serial_log))}' append='off'/></serial>
    <console type='pty'/>
  </devices>
</domain>"""


def is_running(conn: libvirt.virConnect, name: str) -> bool:
    """True while a domain called ``name`` exists and is active."""
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


def main() -> int:
    """Build assets, boot the guest, check marker + uptime + ACPI shutdown."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stderr noise
    t0 = time.monotonic()
    assets = build_guest_assets(CACHE_DIR)
    print(
        f"assets: {time.monotonic() - t0:.2f}s kernel={assets.kernel} "
        f"initrd={assets.initrd} ({assets.initrd.stat().st_size // 1024} KiB) "
        f"acpi_shutdown={assets.acpi_shutdown}"
    )

    t0 = time.monotonic()
    uri = ensure_libvirtd()
    print(f"ensure_libvirtd: {time.monotonic() - t0:.2f}s -> {uri}")
    conn = libvirt.open(uri)
    if is_running(conn, NAME):
        conn.lookupByName(NAME).destroy()
    serial_log = Path(f"/var/log/libvirt/qemu/{NAME}-serial.log")
    serial_log.unlink(missing_ok=True)

    t0 = time.monotonic()
    dom = conn.createXML(domain_xml(NAME, assets.kernel, assets.initrd, serial_log), 0)
    t_create = time.monotonic() - t0
    print(f"createXML: {t_create:.2f}s")
    ok = True
    try:
        wait_for_serial(serial_log, assets.marker, timeout=60)
        t_boot = time.monotonic() - t0
        print(f"marker {assets.marker!r} after {t_boot:.2f}s")
        wait_for_serial(serial_log, f"{UPTIME_PREFIX} ", timeout=10)
        t_up = time.monotonic() - t0
        print(f"first {UPTIME_PREFIX!r} line after {t_up:.2f}s")

        t1 = time.monotonic()
        dom.shutdown()
        off = False
        while time.monotonic() - t1 < 10:
            if not is_running(conn, NAME):
                off = True
                break
            time.sleep(0.1)
        t_off = time.monotonic() - t1
        said = POWEROFF_MARKER in serial_log.read_text(errors="replace")
        if off:
            print(f"ACPI shutdown: powered off in {t_off:.2f}s (guest said poweroff: {said})")
        else:
            print(f"ACPI shutdown: still running after {t_off:.1f}s (guest said: {said})")
            ok = not assets.acpi_shutdown
    except TimeoutError as exc:
        print(f"FAILED: {exc}")
        ok = False
    finally:
        if is_running(conn, NAME):
            t1 = time.monotonic()
            conn.lookupByName(NAME).destroy()
            print(f"destroy: {time.monotonic() - t1:.2f}s")
        conn.close()
    tail = serial_log.read_text(errors="replace").splitlines()[-6:] if serial_log.exists() else []
    print("serial tail:\n  " + "\n  ".join(tail))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
