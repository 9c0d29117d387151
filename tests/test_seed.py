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


SCRIPT = "#!/bin/sh\ncat \"$HVP_SEED/hvp-hostname\" >/etc/hostname\n"


def test_a_script_template_s_seed_has_its_script_and_plain_inputs_and_no_user_data():
    made = seed(script=SCRIPT, network_lines=["hvp.net=eth0,52:54:00:aa:bb:cc,static",
                                              "hvp.addr=eth0,203.0.113.10/24"])
    data = made.iso()
    files = read_seed(data)
    assert "user-data" not in files  # cloud-init, if the image has it, configures nothing
    assert files["hvp-configure"] == SCRIPT
    assert files["hvp-hostname"] == "web1\n"
    assert files["hvp-authorized-keys"] == "ssh-ed25519 AAAAkey me\n"
    assert files["hvp-password-hash"].startswith("$6$")
    assert "s3cret-password" not in "".join(files.values())
    assert files["hvp-host-key.pub"] == made.host_key_public + "\n"
    assert "BEGIN OPENSSH PRIVATE KEY" in files["hvp-host-key"]
    assert files["hvp-network"].splitlines() == ["hvp.net=eth0,52:54:00:aa:bb:cc,static",
                                                 "hvp.addr=eth0,203.0.113.10/24"]
    assert yaml.safe_load(files["meta-data"])["instance-id"] == "i-1"
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    record = iso.get_record(rr_path="/hvp-configure")
    assert record.rock_ridge.get_file_mode() == 0o100755  # runnable as the image copies it
    iso.close()


def test_a_script_seed_without_a_password_has_no_password_file():
    files = read_seed(Seed("i-3", "db1", script=SCRIPT).iso())
    assert "hvp-password-hash" not in files and "hvp-host-key" not in files
    assert files["hvp-network"] == "" and files["hvp-authorized-keys"] == ""
