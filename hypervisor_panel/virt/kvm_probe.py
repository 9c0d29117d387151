"""Whether KVM really runs guests on a node: a faithful, speed-aware probe.

Capabilities list ``kvm`` whenever ``/dev/kvm`` exists, yet machines differ in how KVM
then fails: QEMU may be unable to open the device, a guest with ``<cpu mode='host-model'/>``
may die at start ("failed to set MSR ..."), or KVM may run guests far slower than TCG
(nested or emulated KVM). So the probe boots a domain with exactly the CPU definition guests
get (built by the same DomainBuilder), lets its vCPU run SeaBIOS in a boot loop for a moment
and counts the BIOS banners on its serial console, read through libvirt (works on remote
nodes too). KVM is usable when QEMU stayed alive and looped at least as fast as TCG.

Probe domains are transient and named ``hvp-kvm-probe-*``; :func:`remove_leftovers` removes
the ones a killed panel left behind.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass

import libvirt

from .domain_xml import DomainBuilder
from .errors import libvirt_message

log = logging.getLogger(__name__)

PROBE_PREFIX = "hvp-kvm-probe-"
PROBE_SECONDS = 2.0
PROBE_MEMORY_MIB = 32
BANNER = b"SeaBIOS ("
MIN_BANNERS = 2
# Start errors that mean "KVM itself failed", as opposed to a bad disk or a missing file.
KVM_ERROR = re.compile(r"\bkvm|\bMSR\b|/dev/kvm", re.IGNORECASE)

BuilderFactory = Callable[[str, str, str], DomainBuilder]  # (domain_type, name, uuid)


# libvirt errors that mean "the connection to the node broke", not "KVM failed".
CONNECTION_ERRORS = (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)


class ProbeInterrupted(Exception):
    """The node's connection broke during the probe: no verdict (probe again later)."""


@dataclass(frozen=True)
class ProbeResult:
    """The verdict and the figures it rests on (saved with the node)."""

    usable: bool
    reason: str
    kvm_rate: float | None = None
    tcg_rate: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def is_kvm_error(message: str) -> bool:
    """Whether a failed start names KVM as the cause (the signal to fall back to TCG)."""
    return bool(KVM_ERROR.search(message))


def probe_xml(builder: DomainBuilder) -> str:
    """The probe domain: the guest's own definition, diskless, with SeaBIOS on the serial
    console and an immediate reboot after "no bootable device" (a tight boot loop)."""
    root = builder.element()
    os_el = root.find("os")
    assert os_el is not None  # DomainBuilder always writes <os>
    ET.SubElement(os_el, "bios", useserial="yes", rebootTimeout="0")
    return ET.tostring(root, encoding="unicode")


def remove_leftovers(conn: libvirt.virConnect) -> list[str]:
    """Destroy (and undefine) probe domains left by a panel killed during its probe."""
    removed = []
    for dom in conn.listAllDomains(0):
        name = dom.name()
        if not name.startswith(PROBE_PREFIX):
            continue
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
            removed.append(name)
    if removed:
        log.warning("removed %d leftover kvm probe domain(s): %s", len(removed),
                    ", ".join(removed))
    return removed


def _failure(exc: libvirt.libvirtError) -> str:
    """The message of a probe failure; raises ProbeInterrupted when the link broke."""
    if exc.get_error_domain() in CONNECTION_ERRORS:
        raise ProbeInterrupted(libvirt_message(exc)) from exc
    return libvirt_message(exc)


def _boot_loops(conn: libvirt.virConnect, xml: str, seconds: float) -> tuple[float, str | None]:
    """Run the probe domain for ``seconds``; (BIOS boots per second, error or None)."""
    try:
        dom = conn.createXML(xml, 0)
    except libvirt.libvirtError as exc:
        return 0.0, _failure(exc)
    stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    output = b""
    try:
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            chunk = stream.recv(65536)
            if chunk == -2:  # nothing yet (non-blocking stream)
                time.sleep(0.05)
                continue
            if not chunk:
                break
            output += chunk
        elapsed = time.monotonic() - started
        if not dom.isActive():
            return 0.0, "QEMU exited while the probe ran"
        return output.count(BANNER) / elapsed, None
    except libvirt.libvirtError as exc:
        return 0.0, _failure(exc)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()


def run_probe(conn: libvirt.virConnect, build: BuilderFactory, domain_types: tuple[str, ...],
              seconds: float = PROBE_SECONDS) -> ProbeResult:
    """Compare KVM with TCG on the guests' own CPU definition; see the module docstring."""
    remove_leftovers(conn)

    def loops(domain_type: str) -> tuple[float, str | None]:
        name = f"{PROBE_PREFIX}{uuid.uuid4().hex[:8]}"
        return _boot_loops(conn, probe_xml(build(domain_type, name, str(uuid.uuid4()))),
                           seconds)

    kvm_rate, error = loops("kvm")
    if error:
        return ProbeResult(False, f"a KVM guest cannot run here: {error}")
    if kvm_rate * seconds < MIN_BANNERS:
        return ProbeResult(False, f"a KVM guest made almost no progress in {seconds:.0f} s "
                                  f"({kvm_rate:.1f} BIOS boots/s)", kvm_rate)
    if "qemu" not in domain_types:
        return ProbeResult(True, "KVM runs guests", kvm_rate)
    tcg_rate, error = loops("qemu")
    if error:
        return ProbeResult(True, f"KVM runs guests (TCG probe failed: {error})", kvm_rate)
    if kvm_rate < tcg_rate:
        return ProbeResult(False, f"KVM runs guests slower than emulation ({kvm_rate:.1f} vs "
                                  f"{tcg_rate:.1f} BIOS boots/s: nested or emulated KVM)",
                           kvm_rate, tcg_rate)
    return ProbeResult(True, f"KVM runs guests ({kvm_rate:.1f} vs {tcg_rate:.1f} BIOS "
                             "boots/s under TCG)", kvm_rate, tcg_rate)


def is_kvm_domain(domain_xml: str) -> bool:
    """Whether a domain definition asks for KVM."""
    return ET.fromstring(domain_xml).get("type") == "kvm"  # noqa: S314 - libvirt's XML


def to_tcg(domain_xml: str) -> str:
    """A defined domain's XML switched to TCG: ``type='qemu'``, no host CPU model."""
    root = ET.fromstring(domain_xml)  # noqa: S314 - libvirt's own XML
    root.set("type", "qemu")
    cpu = root.find("cpu")
    if cpu is not None and cpu.get("mode") in ("host-model", "host-passthrough"):
        root.remove(cpu)
    return ET.tostring(root, encoding="unicode")
