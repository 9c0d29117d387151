"""The panel's own SSH key pair, used for every node after it joined."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def panel_key(ssh_dir: Path) -> tuple[Path, str]:
    """(private key path, public key line); generated once, private key mode 0600."""
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = ssh_dir / "id_ed25519"
    public = ssh_dir / "id_ed25519.pub"
    if not private.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
        line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH)
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        public.write_bytes(line + b" hypervisor-panel\n")
    return private, public.read_text().strip()


def write_secret_file(path: Path, text: str) -> None:
    """Write a key file readable by root only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")
