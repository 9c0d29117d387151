"""Adding and removing a VM's interfaces and addresses after it was created.

A running VM gets the change live where libvirt and the network mode allow it (device
hot-plug, updated nwfilter parameters) and in its persistent definition; a stopped VM's
domain is defined anew from its record. Addresses are taken before and given back after
the change, so a failure never leaves an address held by nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import libvirt

from ..errors import Conflict, Invalid, NotFound
from ..store import Store
from ..virt.errors import libvirt_message
from .lifecycle import Lifecycle
from .nics import VMNetworking
from .provision import Provisioner
from .reconcile import Reconciler
from .records import TABLE, VMRecord

if TYPE_CHECKING:
    from ..tasks import TaskManager

LIVE_AND_CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG


class InterfaceActions:
    def __init__(self, store: Store, tasks: TaskManager, reconciler: Reconciler,
                 lifecycle: Lifecycle, provisioner: Provisioner,
                 networking: VMNetworking) -> None:
        self.store, self.tasks = store, tasks
        self.reconciler, self.lifecycle = reconciler, lifecycle
        self.provisioner, self.networking = provisioner, networking

    def _ready(self, vm: VMRecord) -> str:
        """The VM's state; 409 while a task holds it or it is not defined."""
        if vm.get("status") != "ok" or self.tasks.busy(f"vm:{vm['id']}"):
            raise Conflict(f"VM {vm['name']!r} is busy; try again when its task ends",
                           code="vm_busy")
        state, _ = self.reconciler.state_of(vm)
        if state in ("unknown", "missing"):
            raise Conflict(f"VM {vm['name']!r} is {state}", code="invalid_state")
        return state

    @staticmethod
    def find(vm: VMRecord, nic_id: str) -> tuple[int, dict[str, Any]]:
        for index, nic in enumerate(vm.get("interfaces", [])):
            if nic["id"] == nic_id:
                return index, nic
        raise NotFound(f"VM {vm['name']!r} has no interface {nic_id!r}",
                       code="interface_not_found")

    def _device_xml(self, vm: VMRecord, index: int) -> str:
        """The NIC's ``<interface>`` XML (409 when its mode cannot hot-plug)."""
        network, nic = self.networking.nics(vm)[index]
        mode = self.networking.networks.mode(network)
        if not mode.hotplug:
            raise Conflict(f"network mode {network['mode']!r} cannot change a running VM's "
                           "interfaces; stop the VM first", code="hotplug_unsupported")
        return mode.interface(nic).to_xml()

    def _apply(self, vm: VMRecord, running: bool, change: str, index: int) -> None:
        """Make the domain match the record: ``change`` is attach | detach | update."""
        if not running:
            self.provisioner.redefine(vm)
            return
        xml = self._device_xml(vm, index)
        dom = self.lifecycle.domain(vm)
        call = {"attach": dom.attachDeviceFlags, "detach": dom.detachDeviceFlags,
                "update": dom.updateDeviceFlags}[change]
        self.reconciler.expect_redefine(vm["uuid"])
        try:
            call(xml, LIVE_AND_CONFIG)
        except libvirt.libvirtError as exc:
            raise Invalid(f"libvirt refused to {change} the interface of the running VM "
                          f"(stop it and try again): {libvirt_message(exc)}",
                          code="interface_failed") from exc

    def add(self, vm: VMRecord, request: dict[str, Any]) -> dict[str, Any]:
        running = self._ready(vm) == "running"
        nics = list(vm.get("interfaces", []))
        [record] = self.networking.plan(vm["id"], vm["name"], [request], len(nics))
        updated: VMRecord = {**vm, "interfaces": [*nics, record]}  # type: ignore[typeddict-item]
        try:
            self._apply(updated, running, "attach", len(nics))
            self.networking.attach_one(updated, len(nics))
        except BaseException:
            self.networking.release([record])
            raise
        self.store.update(TABLE, vm["id"], {"interfaces": updated["interfaces"]})
        return record

    def remove(self, vm: VMRecord, nic_id: str) -> None:
        running = self._ready(vm) == "running"
        index, record = self.find(vm, nic_id)
        if running:
            self._apply(vm, True, "detach", index)
        self.networking.detach_one(vm, index)
        rest = [n for n in vm.get("interfaces", []) if n["id"] != nic_id]
        updated: VMRecord = {**vm, "interfaces": rest}  # type: ignore[typeddict-item]
        self.store.update(TABLE, vm["id"], {"interfaces": rest})
        if not running:
            self.provisioner.redefine(updated)
        self.networking.release([record])

    def add_address(self, vm: VMRecord, nic_id: str, request: dict[str, Any]
                    ) -> dict[str, Any]:
        """One more address on a NIC (from the given or the first fitting pool)."""
        running = self._ready(vm) == "running"
        index, record = self.find(vm, nic_id)
        grown = self.networking.add_address(vm, record, request)
        updated = self._with_nic(vm, index, grown)
        try:
            self._apply(updated, running, "update", index)
        except BaseException:
            self.networking.release([{"addresses": grown["addresses"][-1:]}])
            raise
        self.store.update(TABLE, vm["id"], {"interfaces": updated["interfaces"]})
        return grown

    def remove_address(self, vm: VMRecord, nic_id: str, address: str) -> dict[str, Any]:
        running = self._ready(vm) == "running"
        index, record = self.find(vm, nic_id)
        gone = [a for a in record.get("addresses", []) if a["address"] == address]
        if not gone:
            raise NotFound(f"interface {nic_id!r} has no address {address}",
                           code="address_not_found")
        shrunk = {**record, "addresses": [a for a in record["addresses"]
                                          if a["address"] != address]}
        updated = self._with_nic(vm, index, shrunk)
        self._apply(updated, running, "update", index)
        self.store.update(TABLE, vm["id"], {"interfaces": updated["interfaces"]})
        self.networking.release([{"addresses": gone}])
        return shrunk

    @staticmethod
    def _with_nic(vm: VMRecord, index: int, nic: dict[str, Any]) -> VMRecord:
        nics = list(vm.get("interfaces", []))
        nics[index] = nic
        return {**vm, "interfaces": nics}  # type: ignore[typeddict-item]
