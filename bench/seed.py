"""Goal (issue 10): building a VM's NoCloud seed takes under 50 ms (median).

Measured: ``Seed.iso()`` (meta-data, user-data with keys, a host key and a password hash,
network-config for two interfaces, written as an ISO 9660 image by pycdlib), 50 times.
The password is hashed once beforehand: SHA-512 crypt is slow on purpose and is paid once
per create, not per seed.
"""

from __future__ import annotations

import time
from pathlib import Path

from hypervisor_panel.vms.guest_keys import new_keypair
from hypervisor_panel.vms.seed import Seed, hash_password

from ._support import Report, summarize

NAME = "seed"
GOAL = "building the NoCloud seed: median < 50 ms"
ROUNDS = 50
LIMIT = 0.050


def run(workdir: Path) -> Report:
    report = Report()
    private, public = new_keypair("host@bench")
    started = time.perf_counter()
    password = hash_password("bench-password")
    hashing = time.perf_counter() - started
    network = {"version": 2, "ethernets": {f"eth{i}": {
        "match": {"macaddress": f"52:54:00:00:00:0{i}"}, "set-name": f"eth{i}",
        "dhcp4": False, "addresses": [f"203.0.113.{10 + i}/24", f"2001:db8::{10 + i}/64"],
        "routes": [{"to": "default", "via": "203.0.113.1"}]} for i in range(2)}}
    seed = Seed("bench-1", "bench", ["ssh-ed25519 AAAAbench bench"], private, public,
                password, network, {"packages": ["htop"]})
    samples, size = [], 0
    for _ in range(ROUNDS):
        started = time.perf_counter()
        size = len(seed.iso())
        samples.append(time.perf_counter() - started)
    stats = summarize(samples)
    report.check("Seed.iso()", stats.ms(), "median < 50 ms", stats.median < LIMIT)
    report.info("seed size", f"{size:,} bytes")
    report.info("reference: SHA-512 crypt of the password (once per create)",
                f"{hashing * 1000:.0f} ms")
    return report
