"""The node record (owner: the node manager)."""

from __future__ import annotations

from typing import Any, TypedDict

TABLE = "nodes"


class NodeRecord(TypedDict, total=False):
    id: str
    name: str
    uri: str
    kind: str  # local | demo | ssh
    host: str
    port: int
    username: str
    keyfile: str
    known_hosts: str
    host_key: str
    host_key_fingerprint: str
    libvirt_socket: str | None
    migration_host: str
    label: str
    domain_type: str  # auto | kvm | qemu
    kvm_usable: bool | None
    kvm_probe: dict[str, Any]
    maintenance: bool
    maintenance_reason: str
    facts: dict[str, Any]
    created: float
