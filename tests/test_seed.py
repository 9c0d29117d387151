"""The NoCloud seed: read back with pycdlib (this host's kernel has no iso9660) and parsed
as cloud-init would."""

from __future__ import annotations

import io

import pycdlib
import yaml

from hypervisor_panel.vms.guest_keys import new_keypair
from hypervisor_panel.vms.seed import Seed, hash_password, read_seed

NETWORK = {"version": 2, "ethernets": {"eth0": {
    "match": {"macaddress": "52:54:00:aa:bb:cc"}, "set-name": "eth0", "dhcp4": False,
    "addresses": ["203.0.113.10/24", "2001:db8::10/64"],
    "routes": [{"to": "0.0.0.0/0", "via": "203.0.113.1"}]}}}


def seed(**extra) -> Seed:
    private, public = new_keypair("host@web1")
    return Seed(instance_id="i-1", hostname="web1", authorized_keys=["ssh-ed25519 AAAAkey me"],
                host_key_private=private, host_key_public=public,
                password_hash=hash_password("s3cret-password"), network_config=NETWORK,
                **extra)


def test_the_seed_is_a_cidata_iso_with_the_three_files():
    data = seed().iso()
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    assert iso.pvd.volume_identifier.decode().strip() == "cidata"
    iso.close()
    files = read_seed(data)
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": "i-1",
                                                  "local-hostname": "web1"}
    assert yaml.safe_load(files["network-config"]) == NETWORK


def test_user_data_sets_keys_host_key_and_only_a_password_hash():
    made = seed(user_data={"packages": ["htop"]})
    text = read_seed(made.iso())["user-data"]
    assert text.startswith("#cloud-config\n")
    assert "s3cret-password" not in text
    config = yaml.safe_load(text)
    root = next(u for u in config["users"] if isinstance(u, dict) and u["name"] == "root")
    assert root["ssh_authorized_keys"] == ["ssh-ed25519 AAAAkey me"]
    assert root["hashed_passwd"].startswith("$6$")
    assert config["ssh_keys"]["ed25519_public"] == made.host_key_public
    assert "BEGIN OPENSSH PRIVATE KEY" in config["ssh_keys"]["ed25519_private"]
    assert config["ssh_genkeytypes"] == ["ed25519"]  # never [] (invalid for cloud-init)
    assert config["hostname"] == "web1" and config["packages"] == ["htop"]


def test_a_seed_without_password_locks_root_s_password_login():
    config = yaml.safe_load(read_seed(Seed("i-2", "db1").iso())["user-data"])
    root = config["users"][1]
    assert root["lock_passwd"] is True and config["ssh_pwauth"] is False
