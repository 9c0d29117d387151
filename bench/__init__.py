"""Performance benchmarks for the hypervisor panel (``python -m bench``).

Each benchmark module exposes ``NAME``, ``GOAL`` (one line) and ``run(ctx) -> list[Row]``.
Benchmarks measure ratios and absolute times side by side in one run and print PASS/FAIL
against the goal from the issue; they are not tests (nothing here asserts on timings).
See ``bench/README.md``.
"""

from __future__ import annotations

BENCHMARKS = ("vm_list", "vm_update", "cold_start", "provision", "ip_alloc", "seed",
              "recipe_latency", "backup", "slow_clients", "store_creates")
