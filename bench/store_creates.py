"""Goal (issue 12): a create costs the same on an empty table and on one with 6,000 rows
(ratio of the medians <= 1.5x): the duplicate-name check every create makes under the store
lock uses the store's name index, not a scan of the table.

* Setup: the panel's own ``VMTemplateService`` on two fresh ``Store`` s (the journaled store
  the panel uses, every write fsynced): one empty, one filled with 6,000 templates through
  ``create`` itself.
* Measured: ``create`` of a new template (name check + durable insert), 200 times on each,
  interleaved so host noise hits both; each new template is deleted again (not timed), so
  the tables keep their size.
* For reference: the same name lookup as a scan (``find`` with a predicate, what the check
  cost before the index) on the full table, and one bare ``Store.insert``.
"""

from __future__ import annotations

import time
from pathlib import Path

from hypervisor_panel.references import References
from hypervisor_panel.store import Store
from hypervisor_panel.vm_templates import TABLE, VMTemplateService

from ._support import BenchError, Report, summarize, time_calls

NAME = "store_creates"
GOAL = "create with 6,000 rows in the table vs empty: ratio of medians <= 1.5x"
ROWS = 6_000
ROUNDS = 200
LIMIT = 1.5


def _template(name: str) -> dict:
    return {"name": name, "memory_mib": 512, "vcpus": 1, "disk_gib": 10}


def _timed_create(service: VMTemplateService, name: str) -> float:
    started = time.perf_counter()
    made = service.create(_template(name))
    elapsed = time.perf_counter() - started
    service.delete(made["id"])
    return elapsed


def run(workdir: Path) -> Report:
    report = Report()
    workdir.mkdir(parents=True, exist_ok=True)
    empty_store, full_store = Store(workdir / "empty.db"), Store(workdir / "full.db")
    try:
        empty = VMTemplateService(empty_store, References())
        full = VMTemplateService(full_store, References())
        started = time.perf_counter()
        for n in range(ROWS):
            full.create(_template(f"row-{n}"))
        if full_store.count(TABLE) != ROWS or empty_store.count(TABLE) != 0:
            raise BenchError("the tables do not hold what the setup made")
        report.info(f"setup: {ROWS:,} creates", f"{time.perf_counter() - started:.1f} s")
        samples: dict[str, list[float]] = {"empty": [], "full": []}
        for n in range(ROUNDS):
            samples["empty"].append(_timed_create(empty, f"new-{n}"))
            samples["full"].append(_timed_create(full, f"new-{n}"))
        scan = time_calls(lambda: full_store.find(
            TABLE, predicate=lambda d: d.get("name") == "absent"), 50)
        insert = time_calls(lambda: empty_store.insert("bench_inserts", {"n": 1}), 50)
    finally:
        empty_store.close()
        full_store.close()
    idle, busy = summarize(samples["empty"]), summarize(samples["full"])
    ratio = busy.median / idle.median
    report.check(f"ratio {ROWS:,} rows / empty (medians)", f"{ratio:.2f}x", f"<= {LIMIT}x",
                 ratio <= LIMIT)
    report.info(f"create, {ROWS:,} rows", busy.ms())
    report.info("create, empty table", idle.ms())
    report.info(f"reference: name lookup as a scan of {ROWS:,} rows", scan.ms())
    report.info("reference: one Store.insert", insert.ms())
    return report
