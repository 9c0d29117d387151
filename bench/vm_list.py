"""Goal 1: listing 1,000 VMs costs at most 1.5x a direct libvirt listing, with a constant
number of libvirt calls per request (no call per VM).

* Setup: an in-process panel on a private test-driver node; VMs are created through the
  API (``POST /api/v1/vms`` with a 16 MiB ``bench-tiny`` template, then each task is
  awaited). 1,000 such VMs need 16,000 MiB of the node's 8 GiB, so the benchmark first
  raises ``memory_overcommit`` (``PATCH /api/v1/settings``) just enough for placement.
* Panel: ``GET /api/v1/vms`` over one keep-alive HTTP connection (full body read).
* Direct: a second libvirt connection to a test-driver node holding the same 1,000 domain
  XMLs; ``listAllDomains()`` then ``name()``, ``UUIDString()`` and ``state()`` per domain,
  building a list of ``{"name", "uuid", "state"}`` dicts.
* Panel and direct samples are interleaved (one each per round) so drift hits both alike.
* libvirt calls are counted by wrapping every public method of libvirt-python's classes;
  only calls made on the server thread while it handles the request are attributed to it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ._support import (
    TINY_MIB,
    BenchError,
    JsonClient,
    LibvirtCallCounter,
    PanelHarness,
    Report,
    create_vms,
    fmt_ms,
    summarize,
    time_calls,
    tiny_template,
    top,
    write_node,
)

NAME = "vm_list"
GOAL = ("GET /api/v1/vms with 1,000 VMs <= 1.5x a direct libvirt-python listing; "
        "libvirt calls per request constant (10 VMs vs 1,000 VMs)")
SMALL, LARGE = 10, 1000
ROUNDS = 30
COUNTED_REQUESTS = 10
MAX_RATIO = 1.5
PATH = "/api/v1/vms"
SETTLE_TIMEOUT = 40.0  # > two of the node watcher's 15 s cache refreshes

STATES = {0: "unknown", 1: "running", 2: "running", 3: "paused", 4: "stopping",
          5: "stopped", 6: "crashed", 7: "suspended"}


def direct_listing(conn) -> list[dict]:
    out = []
    for dom in conn.listAllDomains():
        state, _reason = dom.state()
        out.append({"name": dom.name(), "uuid": dom.UUIDString(),
                    "state": STATES.get(state, "unknown")})
    return out


def _get_list(client: JsonClient, expect: int) -> tuple[int, float, list[str]]:
    """Wait until the listing shows ``expect`` stopped VMs; return (body size, seconds
    waited, the unsettled VMs of the first listing as "name: state")."""
    started = time.perf_counter()
    first: list[str] | None = None
    while True:
        status, payload = client.raw("GET", PATH)
        if status != 200:
            raise BenchError(f"GET {PATH} -> {status}: {payload[:200]!r}")
        items = json.loads(payload)["items"]
        if len(items) != expect:
            raise BenchError(f"GET {PATH} listed {len(items)} VMs, expected {expect}")
        bad = [f"{v['name']}: {v.get('state')}" for v in items if v.get("state") != "stopped"]
        first = bad if first is None else first
        if not bad:
            return len(payload), time.perf_counter() - started, first
        if time.perf_counter() - started > SETTLE_TIMEOUT:
            raise BenchError(f"VMs not in state 'stopped' after {SETTLE_TIMEOUT:g} s: "
                             f"{bad[:5]}")
        time.sleep(0.1)


def _count_calls(client: JsonClient, counter: LibvirtCallCounter) -> tuple[float, str]:
    counter.reset()
    for _ in range(COUNTED_REQUESTS):
        client.raw("GET", PATH)
    total = sum(counter.requests.values())
    return total / COUNTED_REQUESTS, top(counter.requests)


def _request(client: JsonClient) -> None:
    status, _payload = client.raw("GET", PATH)
    if status != 200:
        raise BenchError(f"GET {PATH} -> {status}")


def run(workdir: Path) -> Report:
    import libvirt

    report = Report()
    counter = LibvirtCallCounter()
    with PanelHarness(workdir / "panel") as harness:
        client = harness.client()
        template, overcommit = tiny_template(client, LARGE)

        started = time.perf_counter()
        create_vms(client, (f"bench-{i:04d}" for i in range(SMALL)), template)
        settles = [_get_list(client, SMALL)[1:]]
        with counter:
            small_calls, small_top = _count_calls(client, counter)
        small_time = time_calls(lambda: _request(client), ROUNDS)

        create_vms(client, (f"bench-{i:04d}" for i in range(SMALL, LARGE)), template)
        setup = time.perf_counter() - started
        size, *settled = _get_list(client, LARGE)
        settles.append(tuple(settled))
        panel_conn = harness.panel.nodes.connection(harness.node_id()).get()
        with counter:
            large_calls, large_top = _count_calls(client, counter)
            background = sum(counter.background.values())
            panel_conn.getInfo()  # the counter must see a call made outside a request
            if counter.background["virConnect.getInfo"] < 1:
                raise BenchError("the libvirt call counter does not see libvirt calls")

        # The same 1,000 domains on a separate connection for the direct listing.
        xmls = [dom.XMLDesc(0) for dom in panel_conn.listAllDomains()]
        direct_conn = libvirt.open(write_node(workdir / "direct-node.xml", xmls))
        try:
            if len(direct_listing(direct_conn)) != LARGE:
                raise BenchError("the direct-listing node does not hold the 1,000 domains")
            for _ in range(3):  # warm-up both sides
                _request(client)
                direct_listing(direct_conn)
            panel_samples, direct_samples = [], []
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                _request(client)
                t1 = time.perf_counter()
                direct_listing(direct_conn)
                t2 = time.perf_counter()
                panel_samples.append(t1 - t0)
                direct_samples.append(t2 - t1)
        finally:
            direct_conn.close()

        # Where the panel's time goes (in-process, no HTTP), for the hot-spot analysis.
        admin = harness.panel.store.find_one("users", name="admin")
        service = time_calls(lambda: harness.panel.vms.visible(admin), ROUNDS)
        items = {"items": harness.panel.vms.visible(admin)}
        encode = time_calls(
            lambda: json.dumps(items, separators=(",", ":"), default=str), ROUNDS)
        store_all = time_calls(lambda: harness.panel.store.all("vms"), ROUNDS)
        reconnects = client.reconnects
        client.close()

    panel_stats, direct_stats = summarize(panel_samples), summarize(direct_samples)
    ratio = panel_stats.median / direct_stats.median
    report.info(f"setup: {LARGE} VMs created through the API", f"{setup:.1f} s")
    report.info("setup: VM template memory / memory_overcommit",
                f"{TINY_MIB} MiB / {overcommit:g}")
    report.info(f"GET {PATH}, {SMALL} VMs", small_time.ms())
    report.info(f"GET {PATH}, {LARGE} VMs (HTTP, keep-alive)",
                f"{panel_stats.ms()}, body {size / 1024:.0f} KiB")
    report.info(f"direct libvirt listing, {LARGE} domains", direct_stats.ms())
    report.check(f"ratio panel / direct ({LARGE} VMs, medians)", f"{ratio:.2f}x",
                 f"<= {MAX_RATIO}x", ratio <= MAX_RATIO)
    report.info("  ratio of the fastest samples (less sensitive to host load)",
                f"{panel_stats.min / direct_stats.min:.2f}x")
    report.check("libvirt calls per request: 10 VMs / 1,000 VMs",
                 f"{small_calls:g} / {large_calls:g}", "equal (ideally 0)",
                 small_calls == large_calls)
    report.info("  in-process: vms.visible(admin), 1,000 VMs", service.ms())
    report.info("  in-process: json.dumps of the listing", encode.ms())
    report.info("  in-process: store.all('vms')", store_all.ms())
    report.note(f"libvirt calls during requests: 10 VMs: {small_top}; "
                f"1,000 VMs: {large_top}; other threads meanwhile: {background}")
    report.note("direct listing = listAllDomains() + name()/UUIDString()/state() per domain "
                f"on its own connection; panel - direct = "
                f"{fmt_ms(panel_stats.median - direct_stats.median)} per listing")
    for count, (waited, unsettled) in zip((SMALL, LARGE), settles, strict=True):
        if unsettled:
            report.note(f"after creating {count} VMs, {len(unsettled)} were not 'stopped' in "
                        f"the listing at once ({', '.join(unsettled[:3])}); it settled after "
                        f"{waited:.1f} s (the event-fed state cache lagged behind the create tasks)")
    if reconnects:
        report.note(f"the HTTP client had to reconnect {reconnects} time(s): keep-alive broke")
    return report
