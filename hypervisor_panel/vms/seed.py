"""The NoCloud seed a VM made from an OS template boots with (cloud-init's ``cidata``).

Built in Python with pycdlib (no ``genisoimage`` that may be missing): an ISO 9660 image
labelled ``cidata`` with Joliet and Rock Ridge names ``meta-data``, ``user-data`` and
``network-config``. It carries the hostname, the SSH keys allowed to log in as root (the
owner's and the panel's own key for recipes), a password only as a SHA-512 crypt hash,
the SSH host key the panel generated for the VM (so its key is pinned before first
contact), the network configuration from the IP pools (network-config v2) and user data.

A template configured by its own script (``config: script``, for guests without
cloud-init) gets the same ISO without ``user-data`` but with the script as
``hvp-configure`` (mode 0755) and its inputs as plain files, one value each, so the script
parses no YAML and nothing is ever interpolated into a shell string: ``hvp-hostname``,
``hvp-authorized-keys`` (one key per line), ``hvp-password-hash`` (when a password was
given), ``hvp-host-key`` / ``hvp-host-key.pub`` (OpenSSH ed25519) and ``hvp-network`` (one
``hvp.net=IF,MAC,static|dhcp``, ``hvp.addr=IF,CIDR``, ``hvp.gw=IF,ADDRESS``,
``hvp.mtu=IF,MTU`` or ``hvp.dns=ADDRESS`` per line, as direct-boot guests get on their
kernel command line). The image runs ``hvp-configure`` once per instance-id with
``HVP_SEED`` set to the folder holding those files (README: OS templates and recipes).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pycdlib
import yaml
from passlib.hash import sha512_crypt

VOLUME_LABEL = "cidata"
SCRIPT_FILE = "hvp-configure"


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
    script: str | None = None  # config: script — the template's configuration script
    network_lines: list[str] = field(default_factory=list)  # hvp.* tokens for the script

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

    def files(self) -> dict[str, tuple[bytes, int]]:
        """The seed's files by name, with their mode."""
        text = {"meta-data": self.meta_data(), "network-config": self.network_config_text()}
        if self.script is None:
            text["user-data"] = self.user_data_text()
        else:
            text.update({"hvp-hostname": self.hostname + "\n",
                         "hvp-authorized-keys": "".join(k + "\n"
                                                        for k in self.authorized_keys),
                         "hvp-network": "".join(t + "\n" for t in self.network_lines)})
            if self.password_hash:
                text["hvp-password-hash"] = self.password_hash + "\n"
            if self.host_key_private and self.host_key_public:
                text["hvp-host-key"] = self.host_key_private
                text["hvp-host-key.pub"] = self.host_key_public + "\n"
        out = {name: (value.encode(), 0o100644) for name, value in text.items()}
        if self.script is not None:
            out[SCRIPT_FILE] = (self.script.encode(), 0o100755)
        return out

    def iso(self) -> bytes:
        """The seed as ISO 9660 bytes."""
        image = pycdlib.PyCdlib()
        image.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
        for index, (name, (data, mode)) in enumerate(sorted(self.files().items())):
            image.add_fp(io.BytesIO(data), len(data), f"/FILE{index};1", rr_name=name,
                         joliet_path=f"/{name}", file_mode=mode)
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
        for child in image.list_children(joliet_path="/"):
            name = child.file_identifier().decode("utf-16-be")
            if name in (".", "..", "\x00", "\x01") or child.is_dir():
                continue
            buf = io.BytesIO()
            image.get_file_from_iso_fp(buf, joliet_path=f"/{name}")
            out[name] = buf.getvalue().decode()
    finally:
        image.close()
    return out
