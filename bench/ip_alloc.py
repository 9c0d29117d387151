"""Goal (issue 9): allocating an address from a /16 pool with 60,000 addresses already in use
takes under 5 ms (median), i.e. no scan of the pool per allocation.

* Setup: the panel's own ``IPPoolService`` on a fresh ``Store`` (the same journaled store
  the panel uses, every allocation fsynced); a /16 IPv4 pool; 60,000 allocations made with
  ``allocate`` itself, in order (what a pool that filled up over time looks like).
* Measured: one more ``allocate`` (next free address), 100 times, each then given back;
  and the same on an empty pool, side by side, to show the cost does not grow with use.
* For reference: one ``Store.insert`` (the allocation record's own durable write).
"""

from __future__ import annotations

import time
from pathlib import Path

from hypervisor_panel.events import EventLog
from hypervisor_panel.ip_pools import IPPoolService
from hypervisor_panel.references import References
from hypervisor_panel.store import Store

from ._support import Report, fmt_ms, summarize

NAME = "ip_alloc"
GOAL = "allocate from a /16 pool with 60,000 addresses in use: median < 5 ms"
IN_USE = 60_000
ROUNDS = 100
LIMIT = 0.005


def _service(path: Path) -> tuple[Store, IPPoolService]:
    store = Store(path / "panel.db")
    pools = IPPoolService(store, EventLog(store), References(), lambda *_: None)
    return store, pools


def _measure(pools: IPPoolService, pool_id: str) -> list[float]:
    samples = []
    for n in range(ROUNDS):
        started = time.perf_counter()
        address = pools.allocate(pool_id, f"bench-vm-{n}", "nic0")
        samples.append(time.perf_counter() - started)
        pools.release(pool_id, address.address)
    return samples


def run(workdir: Path) -> Report:
    report = Report()
    workdir.mkdir(parents=True, exist_ok=True)
    store, pools = _service(workdir)
    try:
        full = pools.create({"name": "big", "network": "n", "subnet": "10.20.0.0/16"})
        empty = pools.create({"name": "empty", "network": "n", "subnet": "10.30.0.0/16"})
        started = time.perf_counter()
        for n in range(IN_USE):
            pools.allocate(full["id"], f"vm-{n}", "nic0")
        report.info(f"setup: {IN_USE:,} allocations", f"{time.perf_counter() - started:.1f} s")
        busy = summarize(_measure(pools, full["id"]))
        idle = summarize(_measure(pools, empty["id"]))
        insert = summarize([_timed_insert(store, n) for n in range(ROUNDS)])
    finally:
        store.close()
    report.check(f"allocate, {IN_USE:,} in use in a /16", busy.ms(), "median < 5 ms",
                 busy.median < LIMIT)
    report.info("allocate, empty /16", idle.ms())
    report.info("ratio full / empty (medians)", f"{busy.median / idle.median:.2f}x")
    report.info("reference: one Store.insert", insert.ms())
    report.note(f"usage after: {pools.usage(pools.require(full['id']))}; "
                f"medians {fmt_ms(busy.median)} vs {fmt_ms(idle.median)}")
    return report


def _timed_insert(store: Store, n: int) -> float:
    started = time.perf_counter()
    store.insert("bench_inserts", {"n": n})
    return time.perf_counter() - started
