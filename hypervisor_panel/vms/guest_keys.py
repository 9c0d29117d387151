"""SSH keys the panel makes for each VM made from an OS template.

* the guest's host key: put into its seed, so the panel pins it before first contact;
* an access key: allowed to log in as root, so the panel can run recipes.
Both are ed25519, kept in the data directory with mode 0600 and never returned by the API
(only the public host key is shown, to let an admin check a fingerprint).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def new_keypair(comment: str) -> tuple[str, str]:
    """(OpenSSH private key text, public key line) of a fresh ed25519 key."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


@dataclass(frozen=True)
class GuestKeys:
    host_private: str
    host_public: str
    access_key_path: Path
    access_public: str


class GuestKeyStore:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "guest-keys"

    def _write(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)

    def for_vm(self, vm_id: str, name: str) -> GuestKeys:
        """The VM's keys, made on first use (a reinstall keeps them: the pin stays valid)."""
        folder = self.dir / vm_id
        host, access = folder / "host_ed25519", folder / "access_ed25519"
        if not (host.exists() and access.exists()):
            for path, comment in ((host, f"host@{name}"), (access, f"hypervisor-panel@{name}")):
                private, public = new_keypair(comment)
                self._write(path, private)
                self._write(path.with_suffix(".pub"), public + "\n")
        return GuestKeys(host.read_text(), host.with_suffix(".pub").read_text().strip(),
                         access, access.with_suffix(".pub").read_text().strip())

    def remove(self, vm_id: str) -> None:
        shutil.rmtree(self.dir / vm_id, ignore_errors=True)
