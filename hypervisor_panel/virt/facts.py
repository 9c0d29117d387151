"""What a node's libvirt says about it: the one gatherer of node facts."""

from __future__ import annotations

from typing import Any

import libvirt

from .capabilities import parse_capabilities


def version_string(number: int) -> str:
    """libvirt's packed version number (9000000) as text ("9.0.0")."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def libvirt_facts(conn: libvirt.virConnect) -> dict[str, Any]:
    """CPU, memory, architecture, domain types and versions of the node behind ``conn``."""
    info = conn.getInfo()
    caps = parse_capabilities(conn.getCapabilities())
    try:
        free: int | None = conn.getFreeMemory() // (1024 * 1024)
    except libvirt.libvirtError:
        free = None
    return {
        "arch": caps.arch,
        "cpu_model": caps.cpu_model or info[0],
        "memory_mib": info[1],
        "cpus": info[2],
        "mhz": info[3],
        "free_memory_mib": free,
        "domain_types": list(caps.domain_types),
        "libvirt_version": version_string(conn.getLibVersion()),
        "hypervisor_version": version_string(conn.getVersion()),
    }
