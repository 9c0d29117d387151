"""The VM record (owner: the VM service) and its disks."""

from __future__ import annotations

from typing import Any, TypedDict

from ..errors import Conflict

TABLE = "vms"


class DiskRecord(TypedDict, total=False):
    storage: str
    volume: str
    target: str
    size_gib: int
    image: str | None
    device: str  # disk (default) | cdrom
    shared: bool  # not the VM's own (an installer ISO): never deleted with it


class VMRecord(TypedDict, total=False):
    id: str
    name: str
    domain_name: str
    uuid: str
    owner: str
    node: str
    storage: str
    vm_template: str
    memory_mib: int
    vcpus: int
    cpu_shares: int
    disk_gib: int
    description: str
    boot: dict[str, Any] | None
    image: str | None
    vnc: bool
    status: str  # creating | ok | deleting
    disks: list[DiskRecord]
    interfaces: list[dict[str, Any]]  # {id, network, mac, addresses, dns, options}
    domain_type: str
    os_template: str | None
    hostname: str
    installs: int  # how many times the OS was installed (the seed's instance-id)
    boot_order: list[str]
    snapshots: list[dict[str, Any]]  # {name, description, created, state, memory}
    external_change: float
    created: float


def backup_lock(vm_id: str) -> str:
    """The task lock a running backup of the VM holds (migrate and delete wait for it)."""
    return f"vm-backup:{vm_id}"


def refuse_during_backup(tasks: Any, vm: VMRecord) -> None:
    """409 while a backup of ``vm`` runs: it needs the VM's disks where they are."""
    holder = tasks.busy(backup_lock(vm["id"]))
    if holder:
        raise Conflict(f"VM {vm['name']!r} is being backed up (task {holder}); try again "
                       "when the backup has finished", code="vm_backup_running")


def refuse_with_snapshots(vm: VMRecord, what: str) -> None:
    """409 when the VM has snapshots: ``what`` replaces its disks, which hold them."""
    if vm.get("snapshots"):
        raise Conflict(f"VM {vm['name']!r} has {len(vm['snapshots'])} snapshot(s) inside its "
                       f"disks: delete them before you {what}", code="vm_has_snapshots")
