"""Pure builder for libvirt domain XML (one class per object, virt-manager style).

Values are validated before they get here; ElementTree escapes text and attributes, so no
user string can change the XML's structure.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

METADATA_NS = "https://hypervisor-panel.org/xmlns/vm/1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("hvp", METADATA_NS)
ET.register_namespace("qemu", QEMU_NS)

ON_POWEROFF = "destroy"
ON_REBOOT = "restart"
ON_CRASH = "destroy"
SERIAL_LOG_DIR = "/var/log/libvirt/qemu"
VNC_LISTEN = "127.0.0.1"


def serial_log_path(domain_name: str) -> str:
    """Where libvirt keeps a domain's serial console output on its node."""
    return f"{SERIAL_LOG_DIR}/{domain_name}-serial.log"


@dataclass
class Disk:
    """A guest disk; ``source`` holds the attributes of ``<source>`` for ``source_type``."""

    source_type: str  # file | block | network | volume
    source: dict[str, str]
    driver_type: str = "qcow2"
    target: str = "vda"
    bus: str = "virtio"
    hosts: list[tuple[str, int | None]] = field(default_factory=list)
    auth_username: str | None = None
    auth_secret_uuid: str | None = None
    auth_secret_usage: str | None = None
    auth_type: str | None = None  # the secret's type (the RBD back end says "ceph")
    device: str = "disk"  # disk | cdrom

    def as_cdrom(self, target: str = "hdc") -> Disk:
        """This volume as a read-only IDE CD-ROM (seeds, installer ISOs)."""
        self.device, self.bus, self.target, self.driver_type = "cdrom", "ide", target, "raw"
        return self

    def element(self) -> ET.Element:
        disk = ET.Element("disk", type=self.source_type, device=self.device)
        driver = {"name": "qemu", "type": self.driver_type}
        if self.device == "disk":
            driver["cache"] = "none"
        ET.SubElement(disk, "driver", driver)
        if self.auth_username:
            auth = ET.SubElement(disk, "auth", username=self.auth_username)
            secret = {"type": self.auth_type} if self.auth_type else {}
            if self.auth_secret_uuid:
                secret["uuid"] = self.auth_secret_uuid
            else:
                secret["usage"] = self.auth_secret_usage or ""
            ET.SubElement(auth, "secret", secret)
        source = ET.SubElement(disk, "source", self.source)
        for host, port in self.hosts:
            attrs = {"name": host}
            if port:
                attrs["port"] = str(port)
            ET.SubElement(source, "host", attrs)
        ET.SubElement(disk, "target", dev=self.target, bus=self.bus)
        if self.device == "cdrom":
            ET.SubElement(disk, "readonly")
        return disk


@dataclass
class FilterRef:
    """An nwfilter on an interface with its parameters (``IP`` may repeat)."""

    name: str
    params: list[tuple[str, str]] = field(default_factory=list)

    def element(self) -> ET.Element:
        ref = ET.Element("filterref", filter=self.name)
        for key, value in self.params:
            ET.SubElement(ref, "parameter", name=key, value=value)
        return ref


@dataclass
class Interface:
    """A NIC: ``kind`` is network | bridge | user; ``source`` is the network or bridge name."""

    kind: str
    source: str | None = None
    mac: str | None = None
    model: str = "virtio"
    filterref: FilterRef | None = None
    vlan: int | None = None
    mtu: int | None = None
    portgroup: str | None = None

    def element(self) -> ET.Element:
        iface = ET.Element("interface", type=self.kind)
        if self.mac:
            ET.SubElement(iface, "mac", address=self.mac)
        if self.kind == "network" and self.source:
            attrs = {"network": self.source}
            if self.portgroup:
                attrs["portgroup"] = self.portgroup
            ET.SubElement(iface, "source", attrs)
        elif self.kind == "bridge" and self.source:
            ET.SubElement(iface, "source", bridge=self.source)
        if self.vlan is not None:
            ET.SubElement(ET.SubElement(iface, "vlan"), "tag", id=str(self.vlan))
        ET.SubElement(iface, "model", type=self.model)
        if self.mtu:
            ET.SubElement(iface, "mtu", size=str(self.mtu))
        if self.filterref is not None:
            iface.append(self.filterref.element())
        return iface

    def to_xml(self) -> str:
        """The ``<interface>`` alone (device hot-plug)."""
        return ET.tostring(self.element(), encoding="unicode")


@dataclass
class DomainBuilder:
    """Everything the panel puts in a domain; ``to_xml()`` renders it."""

    name: str
    uuid: str
    domain_type: str
    memory_mib: int
    vcpus: int
    title: str = ""
    vm_id: str = ""
    cpu_shares: int | None = None
    arch: str = "x86_64"
    machine: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    disks: list[Disk] = field(default_factory=list)
    interfaces: list[Interface] = field(default_factory=list)
    #: Extra QEMU arguments (``<qemu:commandline>``), e.g. an isolated user-mode NIC.
    qemu_args: list[str] = field(default_factory=list)
    vnc: bool = False
    serial_log: bool = True
    boot_order: list[str] = field(default_factory=lambda: ["hd"])  # hd | cdrom

    @property
    def serial_log_path(self) -> str:
        return serial_log_path(self.name)

    def element(self) -> ET.Element:
        dom = ET.Element("domain", type=self.domain_type)
        ET.SubElement(dom, "name").text = self.name
        ET.SubElement(dom, "uuid").text = self.uuid
        if self.title:
            ET.SubElement(dom, "title").text = self.title
        meta = ET.SubElement(dom, "metadata")
        ET.SubElement(meta, f"{{{METADATA_NS}}}vm", id=self.vm_id)
        ET.SubElement(dom, "memory", unit="MiB").text = str(self.memory_mib)
        ET.SubElement(dom, "currentMemory", unit="MiB").text = str(self.memory_mib)
        ET.SubElement(dom, "vcpu", placement="static").text = str(self.vcpus)
        if self.cpu_shares:
            ET.SubElement(ET.SubElement(dom, "cputune"), "shares").text = str(self.cpu_shares)
        os_el = ET.SubElement(dom, "os")
        type_attrs = {"arch": self.arch}
        if self.machine:
            type_attrs["machine"] = self.machine
        ET.SubElement(os_el, "type", type_attrs).text = "hvm"
        if self.kernel:
            ET.SubElement(os_el, "kernel").text = self.kernel
            if self.initrd:
                ET.SubElement(os_el, "initrd").text = self.initrd
            if self.cmdline:
                ET.SubElement(os_el, "cmdline").text = self.cmdline
        else:
            for dev in self.boot_order:
                ET.SubElement(os_el, "boot", dev=dev)
        features = ET.SubElement(dom, "features")
        ET.SubElement(features, "acpi")
        ET.SubElement(features, "apic")
        if self.domain_type == "kvm":
            # host-model keeps live migration possible between nodes with similar CPUs.
            ET.SubElement(dom, "cpu", mode="host-model")
        ET.SubElement(dom, "clock", offset="utc")
        ET.SubElement(dom, "on_poweroff").text = ON_POWEROFF
        ET.SubElement(dom, "on_reboot").text = ON_REBOOT
        ET.SubElement(dom, "on_crash").text = ON_CRASH
        devices = ET.SubElement(dom, "devices")
        for disk in self.disks:
            devices.append(disk.element())
        for iface in self.interfaces:
            devices.append(iface.element())
        serial = ET.SubElement(devices, "serial", type="pty")
        if self.serial_log:
            ET.SubElement(serial, "log", file=self.serial_log_path, append="on")
        ET.SubElement(serial, "target", port="0")
        console = ET.SubElement(devices, "console", type="pty")
        ET.SubElement(console, "target", type="serial", port="0")
        if self.vnc:
            ET.SubElement(devices, "graphics", type="vnc", port="-1", autoport="yes",
                          listen=VNC_LISTEN)
        ET.SubElement(devices, "memballoon", model="virtio")
        if self.qemu_args:
            commandline = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
            for arg in self.qemu_args:
                ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=arg)
        return dom

    def to_xml(self) -> str:
        el = self.element()
        ET.indent(el)
        return ET.tostring(el, encoding="unicode")


def vm_id_from_xml(xml: str) -> str | None:
    """The panel VM id stored in a domain's metadata, if the panel made it."""
    root = ET.fromstring(xml)  # noqa: S314 - XML produced by libvirt, not by users
    el = root.find(f"metadata/{{{METADATA_NS}}}vm")
    return el.get("id") if el is not None else None
