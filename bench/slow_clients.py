"""Goal (issue 12): 64 slow clients (1 byte / 3 s) hold connections while 16 normal clients
read; the normal clients still get answers with p99 under 200 ms.

* Setup: an in-process panel on a private test-driver node (``PanelHarness``, the real
  server: waitress with the panel's limits), an admin token.
* Measured: 16 threads, each on its own keep-alive connection, read ``GET /api/v1/vms``
  as fast as they can for DURATION seconds, first alone (the baseline), then while 64
  connections send a request one byte every 3 s (half still in their headers, half in a
  declared body). Latency of every answer; p99 and max are reported.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support.slow import slow_clients

from ._support import JsonClient, PanelHarness, Report, fmt_ms

NAME = "slow_clients"
GOAL = "16 readers while 64 slow clients hold connections: p99 < 200 ms"
SLOW, READERS, DURATION, DRIP = 64, 16, 10.0, 3.0
LIMIT = 0.200


def _readers(port: int, token: str | None) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + DURATION

    def read() -> None:
        client = JsonClient(port, token)
        mine = []
        try:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                status, _body = client.raw("GET", "/api/v1/vms")
                mine.append(time.perf_counter() - started)
                if status != 200:
                    failures[0] += 1
        finally:
            client.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=read) for _ in range(READERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failures[0]


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * (len(ordered) - 1)))]


def run(workdir: Path) -> Report:
    report = Report()
    with PanelHarness(workdir) as harness:
        admin = harness.client()
        token = admin.token
        admin.close()
        alone, failed_alone = _readers(harness.port, token)
        report.info("baseline (no slow clients): p99 / max",
                    f"{fmt_ms(_p99(alone))} / {fmt_ms(max(alone))} ({len(alone)} answers)")
        with slow_clients(harness.port, SLOW, DRIP):
            time.sleep(0.5)
            loaded, failed = _readers(harness.port, token)
        p99 = _p99(loaded)
        report.check(f"with {SLOW} slow clients: p99", fmt_ms(p99), "< 200 ms",
                     p99 < LIMIT and not failed and not failed_alone)
        report.info("with slow clients: max / answers / failed",
                    f"{fmt_ms(max(loaded))} / {len(loaded)} / {failed}")
    return report
