"""Installing the guest OS: from an OS template with a NoCloud seed, or from an ISO.

The VM's disk is a (copy-on-write where the storage can) clone of the template's image,
grown to the VM's size (``Provisioner`` clones ``vm["image"]``); this module adds the
CD-ROMs: the cloud-init seed (a small volume in the VM's storage, deleted with the VM) or
an installer ISO (a volume of the storage, shared: never deleted with the VM).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import libvirt

from ..storage import Disk, StorageBackend
from ..tasks import TaskContext
from .guest_keys import GuestKeyStore
from .nics import VMNetworking, guest_tokens
from .records import DiskRecord, VMRecord
from .seed import Seed

SEED_TARGET = "hdc"


@dataclass
class InstallRequest:
    """What one create (or reinstall) asked for; never stored (the password hash only
    lives in the seed)."""

    seed: bool = False
    password_hash: str | None = None
    ssh_keys: list[str] = field(default_factory=list)
    user_data: dict[str, Any] = field(default_factory=dict)
    iso: str | None = None
    script: str | None = None  # an OS template's own configuration script (config: script)

    def configure_from(self, os_template: dict[str, Any]) -> None:
        """Seed the guest as the template says: cloud-init, its own script, or nothing."""
        config = os_template.get("config")
        self.seed = config in ("cloud-init", "script")
        self.script = os_template.get("script") if config == "script" else None


def seed_volume_name(vm: VMRecord) -> str:
    return f"{vm['domain_name']}-seed.iso"


class Installer:
    def __init__(self, keys: GuestKeyStore, networking: VMNetworking) -> None:
        self.keys = keys
        self.networking = networking

    def seed_for(self, vm: VMRecord, request: InstallRequest) -> Seed:
        """The seed of ``vm``: hostname, keys (the owner's and the panel's access key),
        the panel-made host key, the password hash, its network configuration."""
        keys = self.keys.for_vm(vm["id"], vm["name"])
        return Seed(instance_id=f"{vm['uuid']}-{vm.get('installs', 0)}",
                    hostname=vm.get("hostname") or vm["name"],
                    authorized_keys=[*request.ssh_keys, keys.access_public],
                    host_key_private=keys.host_private, host_key_public=keys.host_public,
                    password_hash=request.password_hash,
                    network_config=self.networking.network_config(vm),
                    user_data=request.user_data, script=request.script,
                    network_lines=guest_tokens(self.networking.guest_interfaces(vm))
                    if request.script is not None else [])

    def cdroms(self, ctx: TaskContext, backend: StorageBackend, conn: libvirt.virConnect,
               vm: VMRecord, request: InstallRequest) -> list[tuple[Disk, DiskRecord]]:
        """Make the seed volume / find the ISO; the CD-ROMs with their disk records."""
        if request.seed:
            iso = self.seed_for(vm, request).iso()
            name = seed_volume_name(vm)
            ctx.progress(40, "writing the configuration seed" if request.script is not None
                         else "writing the cloud-init seed")
            backend.delete_volume(conn, name)  # a reinstall replaces the old one
            volume = backend.create_volume(conn, name, len(iso), "raw"
                                           if "raw" in backend.volume_formats else None)
            backend.upload(conn, name, io.BytesIO(iso), len(iso))
            record: DiskRecord = {"storage": backend.storage["id"], "volume": name,
                                  "target": SEED_TARGET, "device": "cdrom", "size_gib": 0}
            return [(backend.disk(volume, target=SEED_TARGET).as_cdrom(SEED_TARGET), record)]
        if request.iso:
            volume = backend.lookup_volume(conn, request.iso)
            record = {"storage": backend.storage["id"], "volume": request.iso,
                      "target": SEED_TARGET, "device": "cdrom", "shared": True, "size_gib": 0}
            return [(backend.disk(volume, target=SEED_TARGET).as_cdrom(SEED_TARGET), record)]
        return []
