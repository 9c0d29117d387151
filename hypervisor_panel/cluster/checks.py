"""What a node is (OS, versions, CPU, memory, disk) and whether it fits the cluster."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import paramiko

from . import ssh

LIBVIRT_DIR = "/var/lib/libvirt"


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            words = shlex.split(value) if value.strip() else [""]
            values[key.strip()] = words[0] if words else ""
    return {"os_id": values.get("ID", "unknown"), "os_version": values.get("VERSION_ID", ""),
            "os_name": values.get("PRETTY_NAME", values.get("NAME", ""))}


def ssh_facts(client: paramiko.SSHClient) -> dict[str, Any]:
    """Facts read over SSH with fixed commands."""
    facts = parse_os_release(ssh.run(client, ["cat", "/etc/os-release"]))
    cpuinfo = ssh.run(client, ["cat", "/proc/cpuinfo"])
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags")), [])
    facts["virtualization"] = ("vmx" in flags) or ("svm" in flags)
    df = ssh.run(client, ["df", "-Pk", LIBVIRT_DIR]).splitlines()
    facts["disk_free_gib"] = int(df[-1].split()[3]) // (1024 * 1024) if len(df) > 1 else None
    return facts


def local_facts() -> dict[str, Any]:
    """The same facts for the machine the panel runs on (the local node)."""
    facts = parse_os_release(Path("/etc/os-release").read_text())
    flags = next((line.split(":", 1)[1].split()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    facts["virtualization"] = ("vmx" in flags) or ("svm" in flags)
    return facts


def _major(version: str) -> str:
    return version.split(".")[0] if version else ""


def compatibility_problems(candidate: dict[str, Any],
                           members: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Why ``candidate`` cannot join a cluster of ``members`` ((name, facts) pairs)."""
    problems = []
    for name, facts in members:
        if not facts:
            continue
        checks = [
            ("OS", candidate.get("os_id"), facts.get("os_id")),
            ("OS major version", _major(candidate.get("os_version", "")),
             _major(facts.get("os_version", ""))),
            ("CPU architecture", candidate.get("arch"), facts.get("arch")),
            ("libvirt major version", _major(candidate.get("libvirt_version", "")),
             _major(facts.get("libvirt_version", ""))),
            ("QEMU major version", _major(candidate.get("hypervisor_version", "")),
             _major(facts.get("hypervisor_version", ""))),
        ]
        for what, mine, theirs in checks:
            if mine and theirs and mine != theirs:
                problems.append(f"{what} {mine} differs from node {name!r} ({theirs})")
    return problems
