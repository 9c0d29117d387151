"""SIGINT/SIGTERM to the process group of ``make run`` stop the panel cleanly, every time.

The real server runs as ``make run`` starts it: ``python app.py serve`` under a make-like
parent (tests/support/signals.py: it forwards SIGTERM to its child as GNU make does, so the
panel gets it twice) in a process group of its own. Each stop must end the server within
5 s with exit code 0, "Hypervisor panel stopped" and the port closed, with a keep-alive
connection idle and a half-sent request in flight, and also when the signal comes during
start-up; a stop that blocks is ended by the watchdog. The process group is SIGKILLed
afterwards whatever happened.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor_panel.cli import STOP_GRACE
from tests.conftest import ADMIN_PASSWORD, node_uri_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RUNS = 20
STOP_WITHIN = 5.0
SIGNALS = pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM],
                                  ids=lambda s: s.name)


class Served:
    """``app.py serve`` under a make-like parent, leading its own process group."""

    def __init__(self, data: Path, node_uri: str, python_args: tuple[str, ...] = ("app.py",),
                 ) -> None:
        self.port: int | None = None  # port 0: no race with whoever takes a "free" port
        cmd = [sys.executable, "-m", "tests.support.signals", sys.executable, *python_args,
               "serve", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", str(data), "--node-uri", node_uri]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, start_new_session=True, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "HVP_ADMIN_PASSWORD": ADMIN_PASSWORD})
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._new_line:
                self.lines.append(line)
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()  # end of output: waiters need not wait any longer

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            return next(filter(None, map(re.compile(pattern).search, self.lines)), None)

        with self._new_line:
            if not self._new_line.wait_for(
                    lambda: found() or self.proc.poll() is not None, timeout):
                pytest.fail(f"no {pattern!r} within {timeout} s:\n{self.output}")
            match = found()
        assert match, f"exited before {pattern!r}:\n{self.output}"
        return match

    def wait_serving(self, timeout: float = 30) -> None:
        """Wait for the "Hypervisor panel on" line, then for GET /api/v1/health to answer 200."""
        deadline = time.monotonic() + timeout
        self.port = int(self.wait_for_line(r"Hypervisor panel on http://127\.0\.0\.1:(\d+)/",
                                           timeout)[1])
        while True:
            assert self.proc.poll() is None, f"server exited early:\n{self.output}"
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/api/v1/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            if time.monotonic() > deadline:
                pytest.fail(f"no healthy server within {timeout} s:\n{self.output}")
            time.sleep(0.05)

    def signal(self, sig: signal.Signals, within: float, what: str) -> int:
        """Signal the whole group; returns the exit status, which must come ``within`` s."""
        os.killpg(self.proc.pid, sig)
        try:
            status = self.proc.wait(within)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{what}: still running {within} s after {sig.name}:\n{self.output}")
        self._reader.join(5)
        return status

    def stop(self, sig: signal.Signals, what: str) -> None:
        """Signal the whole group; the panel must stop cleanly within STOP_WITHIN seconds."""
        status = self.signal(sig, STOP_WITHIN, what)
        out = self.output
        assert status == 0, f"{what}: exit status {status}:\n{out}"
        assert "Hypervisor panel stopped\n" in out, f"{what}:\n{out}"
        assert "Traceback" not in out and "forced" not in out, f"{what}:\n{out}"
        if self.port is not None:
            with pytest.raises(ConnectionRefusedError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=2):
                pass

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(5)


@contextlib.contextmanager
def served(data: Path, node_uri: str, python_args: tuple[str, ...] = ("app.py",),
           ) -> Iterator[Served]:
    server = Served(data, node_uri, python_args)
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def busy_clients(server: Served) -> Iterator[None]:
    """An idle keep-alive connection and a request whose headers are still coming."""
    assert server.port is not None
    port = server.port
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    busy = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        idle.request("GET", "/api/v1/health")
        response = idle.getresponse()
        response.read()
        assert response.status == 200 and not response.will_close
        busy.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        yield
    finally:
        idle.close()
        busy.close()


@SIGNALS
def test_group_signal_stops_the_server(sig: signal.Signals, tmp_path: Path) -> None:
    node_uri, data = node_uri_for(tmp_path), tmp_path / "data"
    for run in range(1, RUNS + 1):
        with served(data, node_uri) as server:
            server.wait_serving()
            with busy_clients(server):
                time.sleep(0.1)  # let a worker pick the half-sent request up
                server.stop(sig, f"run {run}/{RUNS}")


@SIGNALS
def test_group_signal_during_start_up(sig: signal.Signals, tmp_path: Path) -> None:
    with served(tmp_path / "data", node_uri_for(tmp_path)) as server:
        server.wait_for_line(r"Starting the panel")
        server.stop(sig, "during start-up")
        assert "Hypervisor panel on" not in server.output  # it came before the port opened


def test_watchdog_ends_a_stop_that_blocks(tmp_path: Path) -> None:
    stuck = ("-c", "import sys, time; from hypervisor_panel.cli import main; "
                   "from hypervisor_panel.panel import Panel; "
                   "Panel.close = lambda self: time.sleep(60); sys.exit(main(sys.argv[1:]))")
    with served(tmp_path / "data", node_uri_for(tmp_path), stuck) as server:
        server.wait_serving()
        status = server.signal(signal.SIGTERM, STOP_GRACE + 3, "stuck in Panel.close")
        assert status == 1, server.output
        assert "forcing exit" in server.output and "in <lambda>" in server.output
        assert "Hypervisor panel stopped (forced)" in server.output
