"""The NoCloud seed a VM made from an OS template boots with (cloud-init's ``cidata``).

Built in Python with pycdlib (no ``genisoimage`` that may be missing): an ISO 9660 image
labelled ``cidata`` with Joliet and Rock Ridge names ``meta-data``, ``user-data`` and
``network-config``. It carries the hostname, the SSH keys allowed to log in as root (the
owner's and the panel's own key for recipes), a password only as a SHA-512 crypt hash,
the SSH host key the panel generated for the VM (so its key is pinned before first
contact), the network configuration from the IP pools (network-config v2) and user data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pycdlib
import yaml
from passlib.hash import sha512_crypt

VOLUME_LABEL = "cidata"
FILES = ("meta-data", "user-data", "network-config")


def hash_password(password: str) -> str:
    """A SHA-512 crypt hash (``$6$...``) for cloud-init; the clear text is not kept."""
    return sha512_crypt.hash(password)


@dataclass
class Seed:
    """What goes into the seed (the panel fills it from the VM record and its request)."""

    instance_id: str
    hostname: str
    authorized_keys: list[str] = field(default_factory=list)
    host_key_private: str | None = None  # OpenSSH format, ed25519
    host_key_public: str | None = None
    password_hash: str | None = None
    network_config: dict[str, Any] | None = None
    user_data: dict[str, Any] = field(default_factory=dict)  # merged under the panel's keys

    def meta_data(self) -> str:
        return yaml.safe_dump({"instance-id": self.instance_id,
                               "local-hostname": self.hostname}, sort_keys=False)

    def cloud_config(self) -> dict[str, Any]:
        root: dict[str, Any] = {"name": "root", "lock_passwd": self.password_hash is None}
        if self.authorized_keys:
            root["ssh_authorized_keys"] = list(self.authorized_keys)
        if self.password_hash:
            root["hashed_passwd"] = self.password_hash
        config: dict[str, Any] = {
            **self.user_data,
            "hostname": self.hostname,
            "manage_etc_hosts": True,
            "locale": "C.UTF-8",  # no locales package in minimal images
            "disable_root": False,
            "ssh_pwauth": self.password_hash is not None,
            "users": ["default", root],
        }
        if self.host_key_private and self.host_key_public:
            config["ssh_keys"] = {"ed25519_private": self.host_key_private,
                                  "ed25519_public": self.host_key_public}
            config["ssh_genkeytypes"] = ["ed25519"]  # an empty list is invalid
            config["ssh_deletekeys"] = True
        return config

    def user_data_text(self) -> str:
        return "#cloud-config\n" + yaml.safe_dump(self.cloud_config(), sort_keys=False)

    def network_config_text(self) -> str:
        return yaml.safe_dump(self.network_config or {"version": 2, "ethernets": {}},
                              sort_keys=False)

    def iso(self) -> bytes:
        """The seed as ISO 9660 bytes."""
        contents = {"meta-data": self.meta_data(), "user-data": self.user_data_text(),
                    "network-config": self.network_config_text()}
        image = pycdlib.PyCdlib()
        image.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
        for index, name in enumerate(FILES):
            data = contents[name].encode()
            image.add_fp(io.BytesIO(data), len(data), f"/FILE{index};1", rr_name=name,
                         joliet_path=f"/{name}")
        out = io.BytesIO()
        image.write_fp(out)
        image.close()
        return out.getvalue()


def read_seed(data: bytes) -> dict[str, str]:
    """The files of a seed ISO by name (tests, and checking what a VM got)."""
    image = pycdlib.PyCdlib()
    image.open_fp(io.BytesIO(data))
    out = {}
    try:
        for name in FILES:
            buf = io.BytesIO()
            image.get_file_from_iso_fp(buf, joliet_path=f"/{name}")
            out[name] = buf.getvalue().decode()
    finally:
        image.close()
    return out
