"""The machine the panel runs on: its libvirtd, or the embedded demo node."""

from __future__ import annotations

import time
from typing import Any

import libvirt

from ..virt.demo import is_demo_uri
from ..virt.events import ensure_event_loop
from .records import NodeRecord

LOCAL_URI = "qemu:///system"
DEMO_NOTICE = ("No libvirtd answers at qemu:///system, so the panel runs on the embedded "
               "demo node (libvirt's test driver: nothing real runs). For a real node, "
               "install and start libvirt (`make services`, or apt-get install "
               "libvirt-daemon-system and start libvirtd); the Nodes page then offers to "
               "add it.")
DEMO_LABEL = "Demo node (libvirt test driver, nothing real runs)"


def local_libvirt_answers(uri: str | None = None) -> bool:
    """Whether a libvirtd answers at ``uri`` (default: the local one), quietly."""
    ensure_event_loop()  # also silences libvirt's default error printer
    try:
        conn = libvirt.open(uri or LOCAL_URI)
    except libvirt.libvirtError:
        return False
    conn.close()
    return True


def node_record(uri: str, name: str | None = None) -> NodeRecord:
    """A new record for a node on this machine (a test-driver URI makes the demo node)."""
    demo = is_demo_uri(uri)
    record: dict[str, Any] = {
        "name": name or ("demo" if demo else "local"), "uri": uri,
        "kind": "demo" if demo else "local", "host": "localhost",
        "label": DEMO_LABEL if demo else "", "domain_type": "auto", "kvm_usable": None,
        "created": time.time(),
    }
    return record  # type: ignore[return-value]
