"""Swap restored volumes in for a VM's disks (a backup restored in place).

The restore wrote every disk into a NEW volume first; only then is the VM stopped, its
record pointed at the new volumes, its domain defined anew and the old volumes deleted, so
a failed restore never leaves a VM with a half-written disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import PanelError
from ..store import Store
from .lifecycle import Lifecycle
from .provision import Provisioner
from .records import TABLE, VMRecord

if TYPE_CHECKING:
    from ..nodes import NodeManager
    from ..storages import StorageService


def replace_disks(store: Store, nodes: NodeManager, storages: StorageService,
                  lifecycle: Lifecycle, provisioner: Provisioner, vm_id: str,
                  volumes: dict[str, str], log: Callable[[str], None]) -> VMRecord:
    """Point the VM's disks ``target -> new volume`` (same storage), redefine, drop the old."""
    vm: VMRecord = store.require(TABLE, vm_id, "VM")  # type: ignore[assignment]
    unknown = set(volumes) - {d["target"] for d in vm.get("disks", [])}
    if unknown:
        raise PanelError(f"VM {vm['name']!r} has no disk {sorted(unknown)[0]}",
                         code="restore_mismatch")
    lifecycle.destroy(vm)
    old: list[dict[str, Any]] = []
    disks = []
    for disk in vm.get("disks", []):
        if disk["target"] in volumes:
            old.append(dict(disk))
            disk = {**disk, "volume": volumes[disk["target"]], "image": None}
        disks.append(disk)
    vm = store.update(TABLE, vm_id, {"disks": disks})  # type: ignore[assignment]
    provisioner.redefine(vm)
    conn = nodes.connection(vm["node"]).get()
    for disk in old:
        try:
            storages.backend(storages.require(disk["storage"])).delete_volume(
                conn, disk["volume"])
            log(f"removed the replaced volume {disk['volume']}")
        except PanelError as exc:
            log(f"could not remove the replaced volume {disk['volume']}: {exc.message}")
    return vm
