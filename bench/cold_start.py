"""Goal 3: cold start to the first 200 from ``/api/v1/health`` in under 2 s.

``python app.py serve --port P --data-dir D --node-uri test:///<private copy>`` is spawned
with ``HVP_ADMIN_PASSWORD`` set, and ``/api/v1/health`` is polled until it answers 200; the
time runs from just before the spawn to that answer. Each round starts a fresh data dir
and then the same dir a second time (SIGTERM between them); 3 rounds, medians.
For reference: the bare interpreter start and the import of the panel's modules.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ._support import ADMIN_PASSWORD, REPO, BenchError, Report, fmt_ms, summarize, write_node

NAME = "cold_start"
GOAL = "python app.py serve: first 200 from /api/v1/health in < 2 s (fresh and reused data dir)"
ROUNDS = 3
LIMIT = 2.0
TIMEOUT = 60.0
STOP_WAIT = 3.0  # seconds a SIGTERM gets before SIGKILL
IMPORTS = ("import hypervisor_panel.cli, hypervisor_panel.panel, hypervisor_panel.web.app, "
           "hypervisor_panel.web.server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _health(port: int) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/api/v1/health")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return None
    finally:
        conn.close()


def _start(data_dir: Path, node_uri: str, log: Path) -> tuple[float, bool]:
    """Spawn the server, wait for the first 200 from /health, stop it.

    Returns the time to the first 200 and whether SIGTERM stopped the server by itself.
    """
    port = _free_port()
    env = {**os.environ, "HVP_ADMIN_PASSWORD": ADMIN_PASSWORD, "PYTHONUNBUFFERED": "1"}
    env.pop("HVP_DATA_DIR", None)
    cmd = [sys.executable, str(REPO / "app.py"), "serve", "--port", str(port),
           "--data-dir", str(data_dir), "--node-uri", node_uri]
    with open(log, "ab") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                if _health(port) == 200:
                    elapsed = time.perf_counter() - started
                    break
                if proc.poll() is not None:
                    raise BenchError(f"the server exited with {proc.returncode}; see {log}: "
                                     + log.read_text(errors="replace")[-500:])
                if time.perf_counter() - started > TIMEOUT:
                    raise BenchError(f"no 200 from /api/v1/health within {TIMEOUT:.0f} s")
                time.sleep(0.005)
        finally:
            clean = proc.poll() is not None
            if not clean:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_WAIT)
                    clean = True
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return elapsed, clean


def _python(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    return time.perf_counter() - started


def run(workdir: Path) -> Report:
    report = Report()
    fresh, again, clean = [], [], []
    for index in range(ROUNDS):
        root = workdir / f"run{index}"
        root.mkdir(parents=True)
        uri = write_node(root / "node.xml")
        for times in (fresh, again):
            elapsed, stopped = _start(root / "data", uri, root / "server.log")
            times.append(elapsed)
            clean.append(stopped)
    bare = summarize([_python("pass") for _ in range(ROUNDS)])
    imports = summarize([_python(IMPORTS) for _ in range(ROUNDS)])

    fresh_s, again_s = summarize(fresh), summarize(again)
    goal = f"median < {LIMIT:g} s"
    report.check("fresh data dir: spawn -> first 200 /api/v1/health",
                 f"median {fmt_ms(fresh_s.median)} (runs: "
                 + ", ".join(fmt_ms(t) for t in fresh) + ")",
                 goal, fresh_s.median < LIMIT)
    report.check("same data dir, second start",
                 f"median {fmt_ms(again_s.median)} (runs: "
                 + ", ".join(fmt_ms(t) for t in again) + ")",
                 goal, again_s.median < LIMIT)
    report.info("reference: python -c pass", f"median {fmt_ms(bare.median)}")
    report.info("reference: python -c 'import the panel modules'",
                f"median {fmt_ms(imports.median)}")
    report.info("servers stopped by SIGTERM (else SIGKILL)",
                f"{sum(clean)}/{len(clean)} within {STOP_WAIT:g} s")
    if not all(clean):
        report.note(f"{len(clean) - sum(clean)} of {len(clean)} servers ignored SIGTERM for "
                    f"{STOP_WAIT:g} s and were killed: 'python app.py serve' does not stop "
                    "cleanly on SIGTERM (its handler calls server.stop() on the thread that "
                    "runs server.serve())")
    return report
