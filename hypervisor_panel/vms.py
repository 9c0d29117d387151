"""VMs: create from a template on a node and storage, lifecycle, delete, live state.

State comes from the node's event-fed domain cache, never from a libvirt call per VM.
Every operation that touches libvirt runs as a task holding the VM's lock (409 when busy).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from .errors import Conflict, Forbidden, Invalid, NotFound, PanelError, Unavailable
from .storage import GIB
from .tasks import TaskContext
from .validation import ID, NAME, validate
from .virt import kvm_probe
from .virt.domain_xml import DomainBuilder, serial_log_path

if TYPE_CHECKING:
    from .panel import Panel

TABLE = "vms"
DEFAULT_STOP_TIMEOUT = 60
BOOT_PATH = {"type": "string", "pattern": r"^/[A-Za-z0-9._/+-]{1,255}$"}

CREATE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "vm_template"],
    "properties": {
        "name": NAME,
        "vm_template": ID,
        "node": ID,
        "storage": ID,
        "os_template": ID,
        "image": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                  "description": "A volume in the VM's storage to clone the disk from "
                                 "(copy-on-write where the storage allows)"},
        "recipe": ID,
        "network": ID,
        "owner": ID,
        "description": {"type": "string", "maxLength": 500},
        "start": {"type": "boolean", "description": "Start the VM once it is created"},
        "vnc": {"type": "boolean"},
        "boot": {
            "type": "object",
            "description": "Direct kernel boot (admins only): files on the node",
            "additionalProperties": False,
            "required": ["kernel"],
            "properties": {
                "kernel": BOOT_PATH,
                "initrd": BOOT_PATH,
                "cmdline": {"type": "string", "maxLength": 512,
                            "pattern": r"^[A-Za-z0-9 ._,:=/+@-]*$"},
            },
        },
    },
}
PATCH_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {"description": {"type": "string", "maxLength": 500}},
}
STOP_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "timeout": {"type": "integer", "minimum": 0, "maximum": 3600},
        "force": {"type": "boolean"},
    },
}
EMPTY_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {}}
REBOOT_SCHEMA = {"type": "object", "additionalProperties": False,
                 "properties": {"force": {"type": "boolean"}}}
NOT_IMPLEMENTED_YET = ("os_template", "recipe", "network")


class VMService:
    def __init__(self, panel: Panel) -> None:
        self.panel = panel
        self.store = panel.store
        self._expect_define: set[str] = set()
        self._expect_undefine: set[str] = set()
        self._uuid_to_vm: dict[str, str] = {}
        self._index_lock = threading.RLock()

    # -- views ---------------------------------------------------------------------------
    def _index(self) -> dict[str, str]:
        with self._index_lock:
            if not self._uuid_to_vm:
                self._uuid_to_vm = {v["uuid"]: v["id"] for v in self.store.all(TABLE)}
            return self._uuid_to_vm

    def state_of(self, vm: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if vm.get("status") in ("creating", "deleting"):
            return vm["status"], {}
        conns = self.panel.nodes._conns
        conn = conns.get(vm.get("node", ""))
        if conn is None or conn.status != "online":
            return "unknown", {}
        status = conn.domains.get(vm["uuid"])
        if status is None:
            return "missing", {}
        return status.state, status.stats

    def public(self, vm: dict[str, Any]) -> dict[str, Any]:
        """The API view of a VM record: the record plus live state (``vm`` is not changed)."""
        state, stats = self.state_of(vm)
        out = dict(vm)
        out["state"] = state
        out["stats"] = stats
        if state == "missing":
            out["problem"] = "the domain was removed outside the panel"
        elif vm.get("external_change"):
            out["problem"] = "the domain was changed outside the panel"
        return out

    def visible(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        admin = user["role"] == "admin"
        # public() copies each record once; no need for the store's copies too.
        with self.store.locked():
            return [self.public(v) for v in self.store.raw_values(TABLE)
                    if admin or v.get("owner") == user["id"]]

    def require(self, vm_id: str, user: dict[str, Any]) -> dict[str, Any]:
        vm = self.store.get(TABLE, vm_id)
        if vm is None or (user["role"] != "admin" and vm.get("owner") != user["id"]):
            raise NotFound(f"VM {vm_id!r} not found", code="vm_not_found")
        return vm

    def _domain(self, vm: dict[str, Any]) -> libvirt.virDomain:
        conn = self.panel.nodes.connection(vm["node"]).get()
        try:
            return conn.lookupByUUIDString(vm["uuid"])
        except libvirt.libvirtError as exc:
            raise Conflict(f"VM {vm['name']!r} has no domain on its node "
                           "(removed outside the panel)", code="domain_missing") from exc

    # -- create ------------------------------------------------------------------------
    def create(self, data: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        validate(data, CREATE_SCHEMA, "VM")
        for field in NOT_IMPLEMENTED_YET:
            if field in data:
                raise Invalid(f"{field} is not supported by this panel version yet",
                              code="not_supported")
        if "boot" in data and user["role"] != "admin":
            raise Forbidden("only an admin may set direct kernel boot", code="admin_only")
        owner = data.get("owner", user["id"])
        if owner != user["id"]:
            if user["role"] != "admin":
                raise Forbidden("only an admin may create VMs for other users",
                                code="admin_only")
            if not self.store.get("users", owner):
                raise Invalid(f"user {owner!r} not found", code="user_not_found")
        template = self.store.get("vm_templates", data["vm_template"])
        if template is None:
            raise Invalid(f"VM template {data['vm_template']!r} not found",
                          code="vm_template_not_found")
        node_id = data.get("node") or self.place(template, data.get("storage"))
        node = self.store.get("nodes", node_id)
        if node is None:
            raise Invalid(f"node {node_id!r} not found", code="node_not_found")
        if self.panel.nodes.status(node_id) != "online":
            raise Unavailable(f"node {node['name']!r} is offline", code="node_offline")
        info = self.panel.nodes.info(node_id)
        if info.get("memory_mib") and template["memory_mib"] > info["memory_mib"]:
            raise Invalid(
                f"template {template['name']!r} needs {template['memory_mib']} MiB of RAM but "
                f"node {node['name']!r} has only {info['memory_mib']} MiB",
                code="not_enough_memory",
            )
        storage_id = data.get("storage") or self._default_storage(node_id)
        storage = self.store.get("storages", storage_id) if storage_id else None
        if storage is None:
            raise Invalid(f"storage {storage_id!r} not found", code="storage_not_found")
        self._check_quota(owner, template)
        if "boot" in data:
            self._check_boot_files(node, data["boot"])
        if "image" in data:
            self._check_image(node_id, storage, data["image"])
        with self.store.locked():
            if self.store.find_one(TABLE, name=data["name"]):
                raise Conflict(f"a VM named {data['name']!r} already exists",
                               code="already_exists")
            try:
                self.panel.nodes.connection(node_id).get().lookupByName(data["name"])
            except libvirt.libvirtError:
                pass
            else:
                raise Conflict(f"node {node['name']!r} already has a domain named "
                               f"{data['name']!r}", code="already_exists")
            vm = self.store.insert(TABLE, {
                "name": data["name"],
                "domain_name": data["name"],
                "uuid": str(uuid.uuid4()),
                "owner": owner,
                "node": node_id,
                "storage": storage_id,
                "vm_template": template["id"],
                "memory_mib": template["memory_mib"],
                "vcpus": template["vcpus"],
                "cpu_shares": template.get("cpu_shares", 1024),
                "disk_gib": template["disk_gib"],
                "description": data.get("description", ""),
                "boot": data.get("boot"),
                "image": data.get("image"),
                "vnc": data.get("vnc", False),
                "status": "creating",
                "disks": [],
                "created": time.time(),
            })
        with self._index_lock:
            self._index()[vm["uuid"]] = vm["id"]
        start = data.get("start", False)
        task = self.panel.tasks.submit(
            "vm.create", lambda ctx: self._create_body(ctx, vm["id"], start),
            title=f"Create VM {vm['name']}", owner=user["id"], lock_key=f"vm:{vm['id']}",
            subject=vm["id"],
        )
        self.panel.emit("vm.create", vm["id"], actor=user["id"], name=vm["name"])
        return task

    def place(self, template: dict[str, Any], storage_id: str | None,
              exclude: set[str] | frozenset[str] = frozenset()) -> str:
        """The online node (not in maintenance) with the most memory left for VMs.

        Memory left = node RAM x the cluster's overcommit ratio - RAM of the VMs placed on
        it; only nodes where the storage is active count.
        """
        ratio = float(self.panel.settings().get("memory_overcommit", 1.0))
        placed: dict[str, int] = {}
        for vm in self.store.all(TABLE):
            placed[vm["node"]] = placed.get(vm["node"], 0) + vm["memory_mib"]
        storage = self.store.get("storages", storage_id) if storage_id else None
        best, best_left = None, None
        for node_id in self.panel.nodes.placeable_ids():
            if node_id in exclude:
                continue
            if storage is not None and node_id not in storage.get("nodes", {}):
                continue
            total = self.panel.nodes.info(node_id).get("memory_mib") or 0
            left = int(total * ratio) - placed.get(node_id, 0)
            if left >= template["memory_mib"] and (best_left is None or left > best_left):
                best, best_left = node_id, left
        if best is None:
            raise Unavailable(f"no online node has {template['memory_mib']} MiB of RAM left "
                              f"for a VM (overcommit ratio {ratio})", code="no_capacity")
        return best

    def _default_storage(self, node_id: str) -> str | None:
        storages = self.panel.storages.for_node(node_id)
        return storages[0]["id"] if storages else None

    def _check_quota(self, owner_id: str, template: dict[str, Any]) -> None:
        owner = self.store.get("users", owner_id) or {}
        quota = owner.get("quota") or {}
        if not quota:
            return
        mine = self.store.find(TABLE, owner=owner_id)
        if "vms" in quota and len(mine) + 1 > quota["vms"]:
            raise Forbidden(f"quota exceeded: at most {quota['vms']} VMs", code="quota_exceeded")
        if "memory_mib" in quota:
            used = sum(v["memory_mib"] for v in mine) + template["memory_mib"]
            if used > quota["memory_mib"]:
                raise Forbidden(f"quota exceeded: at most {quota['memory_mib']} MiB of RAM",
                                code="quota_exceeded")
        if "vcpus" in quota:
            used = sum(v["vcpus"] for v in mine) + template["vcpus"]
            if used > quota["vcpus"]:
                raise Forbidden(f"quota exceeded: at most {quota['vcpus']} vCPUs",
                                code="quota_exceeded")

    def _check_image(self, node_id: str, storage: dict[str, Any], image: str) -> None:
        conn = self.panel.nodes.connection(node_id).get()
        backend = self.panel.storages.backend(storage)
        try:
            backend.lookup_volume(conn, image)
        except NotFound as exc:
            raise Invalid(f"image {image!r} not found in storage {storage['name']!r}",
                          code="image_not_found") from exc

    def _check_boot_files(self, node: dict[str, Any], boot: dict[str, Any]) -> None:
        if node.get("kind") != "local":
            return  # only a local node's files can be checked from here
        for key in ("kernel", "initrd"):
            path = boot.get(key)
            if path and not Path(path).is_file():
                raise Invalid(f"boot.{key}: {path} is not a file on node {node['name']!r}",
                              code="file_not_found")

    def builder(self, vm: dict[str, Any]) -> DomainBuilder:
        boot = vm.get("boot") or {}
        return DomainBuilder(
            name=vm["domain_name"],
            uuid=vm["uuid"],
            vm_id=vm["id"],
            title=vm["name"],
            domain_type=self.panel.nodes.domain_type(vm["node"]),
            arch=self.panel.nodes.info(vm["node"]).get("arch", "x86_64"),
            memory_mib=vm["memory_mib"],
            vcpus=vm["vcpus"],
            cpu_shares=vm.get("cpu_shares"),
            kernel=boot.get("kernel"),
            initrd=boot.get("initrd"),
            cmdline=boot.get("cmdline"),
            vnc=vm.get("vnc", False),
            serial_log=not self.panel.nodes.require(vm["node"])["uri"].startswith("test:"),
        )

    def _create_body(self, ctx: TaskContext, vm_id: str, start: bool) -> dict[str, Any]:
        vm = self.store.require(TABLE, vm_id, "VM")
        conn = self.panel.nodes.connection(vm["node"]).get()
        storage = self.store.require("storages", vm["storage"], "storage")
        backend = self.panel.storages.backend(storage)
        volume_name = backend.volume_name(vm)
        created_volume = defined = False
        try:
            backend.ensure_pool(conn)
            if vm.get("image"):
                how = "linked clone" if backend.copy_on_write else "full copy"
                ctx.progress(10, f"cloning image {vm['image']} ({how}) in {storage['name']}")
                volume = backend.clone_volume(conn, vm["image"], volume_name,
                                              vm["disk_gib"] * GIB)
            else:
                ctx.progress(10, f"creating a {vm['disk_gib']} GiB disk in {storage['name']}")
                volume = backend.create_volume(conn, volume_name, vm["disk_gib"] * GIB)
            created_volume = True
            ctx.progress(50, "defining the domain")
            builder = self.builder(vm)
            builder.disks.append(backend.disk(volume, target="vda"))
            self.panel.pm.hook.prepare_domain(panel=self.panel, vm=vm, domain=builder)
            self._expect_define.add(vm["uuid"])
            try:
                conn.defineXML(builder.to_xml())
            except libvirt.libvirtError as exc:
                raise PanelError(f"libvirt refused the domain: {_msg(exc)}",
                                 code="define_failed") from exc
            defined = True
            self.panel.nodes.connection(vm["node"]).set_state(vm["uuid"], vm["domain_name"],
                                                              "stopped")
            disks = [{"storage": storage["id"], "volume": volume_name, "target": "vda",
                      "size_gib": vm["disk_gib"], "image": vm.get("image")}]
            vm = self.store.update(TABLE, vm_id, {"status": "ok", "disks": disks,
                                                  "domain_type": builder.domain_type})
            if start:
                ctx.progress(90, "starting")
                self._start(vm)
            node_name = self.panel.nodes.require(vm["node"])["name"]
            ctx.log(f"VM {vm['name']} created on node {node_name}")
            return {"vm": vm_id}
        except Exception:
            ctx.log("creation failed; rolling back")
            if defined:
                self._undefine(conn, vm)
            if created_volume:
                try:
                    backend.delete_volume(conn, volume_name)
                except PanelError as exc:
                    ctx.log(f"could not delete the new volume: {exc.message}")
            self.store.delete(TABLE, vm_id)
            with self._index_lock:
                self._index().pop(vm["uuid"], None)
            raise
        finally:
            self._expect_define.discard(vm["uuid"])

    def replay_on_node(self, node_id: str) -> int:
        """Re-create the disks and domains of this node's VMs that the node lacks.

        Used for the demo node: libvirt's test driver forgets everything when its
        connection closes, while the panel's records survive.
        """
        nc = self.panel.nodes.connection(node_id)
        conn = nc.get()
        replayed = 0
        for vm in self.store.find(TABLE, node=node_id, status="ok"):
            if vm["uuid"] in nc.domains:
                continue
            builder = self.builder(vm)
            for disk in vm.get("disks", []):
                storage = self.store.get("storages", disk["storage"])
                if storage is None:
                    continue
                backend = self.panel.storages.backend(storage)
                try:
                    volume = backend.lookup_volume(conn, disk["volume"])
                except PanelError:
                    volume = backend.create_volume(conn, disk["volume"],
                                                   disk["size_gib"] * GIB)
                builder.disks.append(backend.disk(volume, target=disk["target"]))
            self.panel.pm.hook.prepare_domain(panel=self.panel, vm=vm, domain=builder)
            conn.defineXML(builder.to_xml())
            nc.set_state(vm["uuid"], vm["domain_name"], "stopped")
            replayed += 1
        return replayed

    # -- actions -------------------------------------------------------------------------
    def action(self, vm_id: str, action: str, body: dict[str, Any], user: dict[str, Any]):
        vm = self.require(vm_id, user)
        if vm.get("status") != "ok":
            raise Conflict(f"VM {vm['name']!r} is {vm.get('status')}", code="vm_busy")
        state, _ = self.state_of(vm)
        handlers = {
            "start": (EMPTY_SCHEMA, self._start, ("stopped", "crashed", "paused")),
            "stop": (STOP_SCHEMA, self._stop, ("running", "paused", "stopping")),
            "reboot": (REBOOT_SCHEMA, self._reboot, ("running",)),
            "destroy": (EMPTY_SCHEMA, self._destroy, ("running", "paused", "stopping",
                                                      "crashed")),
        }
        if action == "migrate":
            task = self.panel.migrator.submit(vm_id, body, user)
            self.panel.emit("vm.migrate", vm_id, actor=user["id"], name=vm["name"],
                            to=body.get("node"))
            return task
        if action not in handlers:
            raise NotFound(f"unknown action {action!r}", code="unknown_action")
        schema, func, allowed = handlers[action]
        validate(body, schema, f"{action} request")
        if state == "unknown":
            raise Unavailable("the VM's node is offline", code="node_offline")
        if state == "missing":
            raise Conflict(f"VM {vm['name']!r} has no domain on its node", code="domain_missing")
        if state not in allowed:
            raise Conflict(f"cannot {action} VM {vm['name']!r}: it is {state}",
                           code="invalid_state")
        task = self.panel.tasks.submit(
            f"vm.{action}", lambda ctx: func(self.store.require(TABLE, vm_id), ctx=ctx, **body),
            title=f"{action.capitalize()} VM {vm['name']}", owner=user["id"],
            lock_key=f"vm:{vm_id}", subject=vm_id,
        )
        self.panel.emit(f"vm.{action}", vm_id, actor=user["id"], name=vm["name"])
        return task

    def _start(self, vm: dict[str, Any], ctx: TaskContext | None = None) -> None:
        dom = self._domain(vm)
        try:
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            else:
                self._create_domain(vm, dom, ctx)
        except libvirt.libvirtError as exc:
            raise PanelError(f"cannot start {vm['name']}: {_msg(exc)}",
                             code="start_failed") from exc
        self.panel.nodes.connection(vm["node"]).set_state(vm["uuid"], vm["domain_name"],
                                                          "running")

    def _create_domain(self, vm: dict[str, Any], dom: libvirt.virDomain,
                       ctx: TaskContext | None) -> None:
        """Start the domain; when KVM itself fails on an auto node, switch it to TCG once."""
        try:
            dom.create()
            return
        except libvirt.libvirtError as exc:
            message = _msg(exc)
            node = self.panel.nodes.require(vm["node"])
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            if (not kvm_probe.is_kvm_domain(xml)
                    or node.get("domain_type", "auto") != "auto"
                    or not kvm_probe.is_kvm_error(message)):
                raise
        self.panel.nodes.mark_kvm_unusable(vm["node"], message)
        if ctx:
            ctx.log(f"KVM failed on this node ({message}); retrying with emulation (TCG)")
        self._expect_define.add(vm["uuid"])
        try:
            dom = self.panel.nodes.connection(vm["node"]).get().defineXML(
                kvm_probe.to_tcg(xml))
        finally:
            self._expect_define.discard(vm["uuid"])
        self.store.update(TABLE, vm["id"], {"domain_type": "qemu"})
        dom.create()

    def _stop(self, vm: dict[str, Any], ctx: TaskContext | None = None,
              timeout: int = DEFAULT_STOP_TIMEOUT, force: bool = False) -> dict[str, Any]:
        """ACPI shutdown, then power off once ``timeout`` seconds have passed."""
        dom = self._domain(vm)
        if not force and timeout > 0:
            try:
                dom.shutdown()
            except libvirt.libvirtError as exc:
                if ctx:
                    ctx.log(f"ACPI shutdown refused: {_msg(exc)}")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not dom.isActive():
                    self._mark_stopped(vm)
                    return {"forced": False}
                if ctx:
                    waited = timeout - (deadline - time.monotonic())
                    ctx.progress(int(90 * waited / timeout))
                time.sleep(0.5)
            if ctx:
                ctx.log(f"the guest did not stop within {timeout} s; powering off")
        if dom.isActive():
            dom.destroy()
        self._mark_stopped(vm)
        return {"forced": True}

    def _mark_stopped(self, vm: dict[str, Any]) -> None:
        self.panel.nodes.connection(vm["node"]).set_state(vm["uuid"], vm["domain_name"],
                                                          "stopped")

    def _reboot(self, vm: dict[str, Any], ctx: TaskContext | None = None,
                force: bool = False) -> None:
        dom = self._domain(vm)
        try:
            if force:
                dom.reset(0)
            else:
                dom.reboot(0)
        except libvirt.libvirtError as exc:
            raise PanelError(f"cannot reboot {vm['name']}: {_msg(exc)}",
                             code="reboot_failed") from exc

    def _destroy(self, vm: dict[str, Any], ctx: TaskContext | None = None) -> None:
        dom = self._domain(vm)
        if dom.isActive():
            dom.destroy()
        self._mark_stopped(vm)

    # -- update / delete ----------------------------------------------------------------
    def update(self, vm_id: str, data: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
        self.require(vm_id, user)
        validate(data, PATCH_SCHEMA, "VM")
        return self.public(self.store.update(TABLE, vm_id, data))

    def delete(self, vm_id: str, user: dict[str, Any], keep_disks: bool = False):
        vm = self.require(vm_id, user)
        if vm.get("status") == "creating":
            raise Conflict(f"VM {vm['name']!r} is still being created", code="vm_busy")
        task = self.panel.tasks.submit(
            "vm.delete", lambda ctx: self._delete_body(ctx, vm_id, keep_disks),
            title=f"Delete VM {vm['name']}", owner=user["id"], lock_key=f"vm:{vm_id}",
            subject=vm_id,
        )
        self.panel.emit("vm.delete", vm_id, actor=user["id"], name=vm["name"])
        return task

    def _delete_body(self, ctx: TaskContext, vm_id: str, keep_disks: bool) -> dict[str, Any]:
        vm = self.store.require(TABLE, vm_id, "VM")
        conn = self.panel.nodes.connection(vm["node"]).get()
        self._undefine(conn, vm)
        ctx.progress(50, "domain removed")
        kept = []
        for disk in vm.get("disks", []):
            if keep_disks:
                kept.append(disk)
                continue
            storage = self.store.get("storages", disk["storage"])
            if storage is not None:
                self.panel.storages.backend(storage).delete_volume(conn, disk["volume"])
                ctx.log(f"deleted volume {disk['volume']}")
        if self.panel.nodes.require(vm["node"]).get("kind") == "local":
            # The serial log is the panel's file (DomainBuilder asks for it): it goes too.
            Path(serial_log_path(vm["domain_name"])).unlink(missing_ok=True)
        self.store.delete(TABLE, vm_id)
        with self._index_lock:
            self._index().pop(vm["uuid"], None)
        return {"kept_disks": kept}

    def expect_move(self, dom_uuid: str, done: bool = False) -> None:
        """Domain events of a migration are the panel's own doing, not outside changes."""
        for expected in (self._expect_define, self._expect_undefine):
            if done:
                expected.discard(dom_uuid)
            else:
                expected.add(dom_uuid)

    def undefine_for_move(self, conn: libvirt.virConnect, vm: dict[str, Any]) -> None:
        """Remove the source definition after an offline move (disks handled by the caller)."""
        self._undefine(conn, vm)

    def _undefine(self, conn: libvirt.virConnect, vm: dict[str, Any]) -> None:
        try:
            dom = conn.lookupByUUIDString(vm["uuid"])
        except libvirt.libvirtError:
            return
        self._expect_undefine.add(vm["uuid"])
        if dom.isActive():
            dom.destroy()
        flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                 | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                 | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        try:
            dom.undefineFlags(flags)
        except libvirt.libvirtError:
            dom.undefine()
        self.panel.nodes.connection(vm["node"]).set_state(vm["uuid"], vm["domain_name"], None)

    # -- console and events -------------------------------------------------------------
    def console(self, vm_id: str, user: dict[str, Any], max_bytes: int = 65536) -> str:
        vm = self.require(vm_id, user)
        node = self.panel.nodes.require(vm["node"])
        if node.get("kind") != "local":
            raise Invalid("the serial console log can only be read on the local node",
                          code="not_supported")
        path = Path(serial_log_path(vm["domain_name"]))
        if not path.exists():
            return ""
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", "replace")

    def on_domain_event(self, node_id: str, dom_uuid: str, state: str | None,
                        event: int, detail: int) -> None:
        """Record domain changes made outside the panel (called on libvirt's event thread)."""
        vm_id = self._index().get(dom_uuid)
        if vm_id is None:
            return
        if event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
            if dom_uuid in self._expect_undefine:
                self._expect_undefine.discard(dom_uuid)
                return
            self.panel.emit("vm.domain_removed_outside", vm_id)
        elif (event == libvirt.VIR_DOMAIN_EVENT_DEFINED
              and detail == libvirt.VIR_DOMAIN_EVENT_DEFINED_UPDATED
              and dom_uuid not in self._expect_define):
            try:
                self.store.update(TABLE, vm_id, {"external_change": time.time()})
            except PanelError:
                return
            self.panel.emit("vm.domain_changed_outside", vm_id)
        elif state:
            self.panel.emit("vm.state", vm_id, state=state)


def _msg(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()
