"""Reading a node's capabilities XML: domain types, memory, CPUs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

# Preference order: hardware acceleration first, then emulation, then libvirt's test driver.
DOMAIN_TYPE_PREFERENCE = ("kvm", "hvf", "qemu", "test")


@dataclass(frozen=True)
class HostCaps:
    arch: str
    domain_types: tuple[str, ...]
    cpu_model: str | None


def parse_capabilities(xml: str) -> HostCaps:
    """Extract the host arch, the domain types offered for it and the CPU model."""
    root = ET.fromstring(xml)  # noqa: S314 - XML produced by libvirt, not by users
    arch = root.findtext("host/cpu/arch") or "x86_64"
    types: list[str] = []
    for guest in root.findall("guest"):
        arch_el = guest.find("arch")
        if arch_el is None or arch_el.get("name") != arch:
            continue
        if guest.findtext("os_type") not in ("hvm", None):
            continue
        for dom in arch_el.findall("domain"):
            t = dom.get("type")
            if t and t not in types:
                types.append(t)
    return HostCaps(arch=arch, domain_types=tuple(types), cpu_model=root.findtext("host/cpu/model"))


def choose_domain_type(caps: HostCaps, kvm_usable: bool | None = True) -> str:
    """Pick the best domain type the host offers; skip kvm when a probe found it unusable."""
    for candidate in DOMAIN_TYPE_PREFERENCE:
        if candidate == "kvm" and kvm_usable is False:
            continue
        if candidate in caps.domain_types:
            return candidate
    if caps.domain_types:
        return caps.domain_types[0]
    raise ValueError("the node offers no domain type for its architecture")
