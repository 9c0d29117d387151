"""Pure XML builders against expected files, validated by libvirt's schema and test driver."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import libvirt
import pytest
from hypervisor_panel_plugins.storage_dir.backend import DirStorage

from hypervisor_panel.virt.capabilities import HostCaps, choose_domain_type, parse_capabilities
from hypervisor_panel.virt.domain_xml import Disk, DomainBuilder, vm_id_from_xml

EXPECTED = Path(__file__).parent / "data" / "expected"
UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def builder(**overrides) -> DomainBuilder:
    values = dict(name="web1", uuid=UUID, vm_id="abc123", title="web1", domain_type="kvm",
                  memory_mib=512, vcpus=2, cpu_shares=2048,
                  disks=[Disk("file", {"file": "/var/lib/libvirt/images/web1-disk0.qcow2"})])
    values.update(overrides)
    return DomainBuilder(**values)


def validate_with_libvirt_schema(xml: str, kind: str, tmp_path: Path) -> None:
    if not shutil.which("virt-xml-validate"):
        pytest.skip("virt-xml-validate (libvirt-clients) is not installed")
    path = tmp_path / f"{kind}.xml"
    path.write_text(xml)
    proc = subprocess.run(["virt-xml-validate", str(path), kind], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_domain_xml_matches_the_expected_file(tmp_path: Path):
    xml = builder().to_xml()
    assert xml == (EXPECTED / "domain-kvm.xml").read_text().strip()
    validate_with_libvirt_schema(xml, "domain", tmp_path)
    assert vm_id_from_xml(xml) == "abc123"


def test_direct_kernel_boot_and_tcg(tmp_path: Path):
    xml = builder(domain_type="qemu", kernel="/boot/vmlinuz", initrd="/boot/initrd.img",
                  cmdline="console=ttyS0", vnc=True).to_xml()
    assert xml == (EXPECTED / "domain-tcg-kernel.xml").read_text().strip()
    validate_with_libvirt_schema(xml, "domain", tmp_path)


def test_hostile_values_are_escaped_not_interpreted():
    xml = builder(title="</title><devices/>", kernel="/k", cmdline="a & b").to_xml()
    assert "<title>&lt;/title&gt;&lt;devices/&gt;</title>" in xml
    assert "<cmdline>a &amp; b</cmdline>" in xml
    assert xml.count("<devices>") == 1


def test_test_driver_accepts_the_domain(tmp_path: Path):
    node = tmp_path / "node.xml"
    shutil.copyfile(Path(__file__).parent / "data" / "test-node.xml", node)
    conn = libvirt.open(f"test://{node}")
    dom = conn.defineXML(builder(domain_type="test", serial_log=False).to_xml())
    assert dom.UUIDString() == UUID and dom.info()[3] == 2
    conn.close()


def test_dir_pool_xml(tmp_path: Path):
    xml = DirStorage({"name": "local", "options": {"path": "/srv/vm"}}).pool_xml()
    assert xml == ("<pool type=\"dir\"><name>hvp-local</name>"
                   "<target><path>/srv/vm</path></target></pool>")
    validate_with_libvirt_schema(xml, "storagepool", tmp_path)
    vol = DirStorage({"name": "local", "options": {"path": "/srv/vm"}}).volume_xml("d.qcow2", 5)
    # qcow2 v3: libvirt's default (0.10) cannot hold the dirty bitmaps of incremental backups
    assert vol == ("<volume><name>d.qcow2</name><capacity unit=\"bytes\">5</capacity>"
                   "<allocation unit=\"bytes\">0</allocation><target>"
                   "<format type=\"qcow2\" /><compat>1.1</compat></target></volume>")
    validate_with_libvirt_schema(vol, "storagevol", tmp_path)
    raw = DirStorage({"name": "local", "options": {"path": "/srv/vm"}}).volume_xml("d.img", 5,
                                                                                 "raw")
    assert "<compat>" not in raw


CAPS = """<capabilities><host><cpu><arch>x86_64</arch><model>Skylake</model></cpu></host>
<guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/>
</arch></guest><guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/></arch>
</guest></capabilities>"""


def test_domain_type_comes_from_capabilities_and_the_kvm_probe():
    caps = parse_capabilities(CAPS)
    assert caps == HostCaps("x86_64", ("qemu", "kvm"), "Skylake")
    assert choose_domain_type(caps, kvm_usable=True) == "kvm"
    assert choose_domain_type(caps, kvm_usable=None) == "kvm"
    assert choose_domain_type(caps, kvm_usable=False) == "qemu"
    assert choose_domain_type(HostCaps("x86_64", ("test",), None)) == "test"


def test_kvm_probe_domain_keeps_the_guest_cpu_definition(tmp_path: Path):
    import xml.etree.ElementTree as ET

    from hypervisor_panel.virt.kvm_probe import probe_xml

    guest = builder(disks=[])
    probe = ET.fromstring(probe_xml(guest))  # noqa: S314 - our own XML
    assert probe.get("type") == "kvm"
    assert ET.tostring(probe.find("cpu")) == ET.tostring(guest.element().find("cpu"))
    assert probe.find("os/bios").attrib == {"useserial": "yes", "rebootTimeout": "0"}
    assert probe.find("devices/disk") is None
    validate_with_libvirt_schema(ET.tostring(probe, encoding="unicode"), "domain", tmp_path)


def test_to_tcg_switches_type_and_drops_the_host_cpu_model():
    from hypervisor_panel.virt.kvm_probe import is_kvm_domain, is_kvm_error, to_tcg

    xml = builder().to_xml()
    assert is_kvm_domain(xml)
    tcg = to_tcg(xml)
    assert not is_kvm_domain(tcg) and "host-model" not in tcg
    assert "web1-disk0.qcow2" in tcg
    assert is_kvm_error("qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69")
    assert is_kvm_error("-accel kvm: failed to initialize kvm: Inappropriate ioctl")
    assert not is_kvm_error("Cannot access storage file '/x.qcow2': No such file")
