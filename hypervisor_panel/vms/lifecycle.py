"""Lifecycle actions on a VM's domain: start, stop, reboot, destroy, undefine.

Each runs inside a task holding the VM's lock; the node's state cache is updated at once
(libvirt's events may lag behind). A start that fails because KVM itself fails on an
``auto`` node switches that node to TCG and is retried once (see ``virt/kvm_probe``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import libvirt

from ..errors import Conflict, PanelError
from ..store import Store
from ..tasks import TaskContext
from ..virt import kvm_probe
from ..virt.errors import libvirt_message
from .reconcile import Reconciler
from .records import TABLE, VMRecord

if TYPE_CHECKING:
    from ..nodes import NodeManager

DEFAULT_STOP_TIMEOUT = 60
UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                  | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                  | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)  # backups' checkpoints
BASIC_UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


class Lifecycle:
    def __init__(self, store: Store, nodes: NodeManager, reconciler: Reconciler) -> None:
        self.store = store
        self.nodes = nodes
        self.reconciler = reconciler

    def domain(self, vm: VMRecord) -> libvirt.virDomain:
        conn = self.nodes.connection(vm["node"]).get()
        try:
            return conn.lookupByUUIDString(vm["uuid"])
        except libvirt.libvirtError as exc:
            raise Conflict(f"VM {vm['name']!r} has no domain on its node "
                           "(removed outside the panel)", code="domain_missing") from exc

    def _mark(self, vm: VMRecord, state: str | None) -> None:
        self.nodes.connection(vm["node"]).set_state(vm["uuid"], vm["domain_name"], state)

    def start(self, vm: VMRecord, ctx: TaskContext | None = None) -> None:
        dom = self.domain(vm)
        try:
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            else:
                self._create(vm, dom, ctx)
        except libvirt.libvirtError as exc:
            raise PanelError(f"cannot start {vm['name']}: {libvirt_message(exc)}",
                             code="start_failed") from exc
        self._mark(vm, "running")

    def _create(self, vm: VMRecord, dom: libvirt.virDomain, ctx: TaskContext | None) -> None:
        """Start the domain; when KVM itself fails on an auto node, switch it to TCG once."""
        try:
            dom.create()
            return
        except libvirt.libvirtError as exc:
            message = libvirt_message(exc)
            node = self.nodes.require(vm["node"])
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            if (not kvm_probe.is_kvm_domain(xml) or node.get("domain_type", "auto") != "auto"
                    or not kvm_probe.is_kvm_error(message)):
                raise
        self.nodes.mark_kvm_unusable(vm["node"], message)
        if ctx:
            ctx.log(f"KVM failed on this node ({message}); retrying with emulation (TCG)")
        self.reconciler.expect_redefine(vm["uuid"])
        dom = self.nodes.connection(vm["node"]).get().defineXML(kvm_probe.to_tcg(xml))
        self.store.update(TABLE, vm["id"], {"domain_type": "qemu"})
        dom.create()

    def stop(self, vm: VMRecord, ctx: TaskContext | None = None,
             timeout: int = DEFAULT_STOP_TIMEOUT, force: bool = False) -> dict[str, Any]:
        """ACPI shutdown, then power off once ``timeout`` seconds have passed."""
        dom = self.domain(vm)
        if not force and timeout > 0:
            try:
                dom.shutdown()
            except libvirt.libvirtError as exc:
                if ctx:
                    ctx.log(f"ACPI shutdown refused: {libvirt_message(exc)}")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not dom.isActive():
                    self._mark(vm, "stopped")
                    return {"forced": False}
                if ctx:
                    ctx.check_cancelled()
                    ctx.progress(int(90 * (timeout - (deadline - time.monotonic())) / timeout))
                time.sleep(0.5)
            if ctx:
                ctx.log(f"the guest did not stop within {timeout} s; powering off")
        if dom.isActive():
            dom.destroy()
        self._mark(vm, "stopped")
        return {"forced": True}

    def reboot(self, vm: VMRecord, ctx: TaskContext | None = None, force: bool = False) -> None:
        dom = self.domain(vm)
        try:
            if force:
                dom.reset(0)
            else:
                dom.reboot(0)
        except libvirt.libvirtError as exc:
            raise PanelError(f"cannot reboot {vm['name']}: {libvirt_message(exc)}",
                             code="reboot_failed") from exc

    def destroy(self, vm: VMRecord, ctx: TaskContext | None = None) -> None:
        dom = self.domain(vm)
        if dom.isActive():
            dom.destroy()
        self._mark(vm, "stopped")

    def undefine(self, conn: libvirt.virConnect, vm: VMRecord) -> None:
        """Power off and remove the domain from ``conn`` (its disks stay)."""
        try:
            dom = conn.lookupByUUIDString(vm["uuid"])
        except libvirt.libvirtError:
            return
        self.reconciler.expect_undefine(vm["uuid"])
        if dom.isActive():
            dom.destroy()
        for flags in (UNDEFINE_FLAGS, BASIC_UNDEFINE_FLAGS):  # drivers without NVRAM etc.
            try:
                dom.undefineFlags(flags)
                break
            except libvirt.libvirtError:
                continue
        else:
            dom.undefine()
        self._mark(vm, None)
