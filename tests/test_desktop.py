"""The pywebview desktop window (Qt back end) under Xvfb, one subprocess per window.

Qt cannot start twice in one process, so ``python app.py desktop`` runs as a subprocess with
``HVP_DESKTOP_PROBE``: it reports what the window loaded, holds the window open until the
test has screenshotted the X display, then closes (see hypervisor_panel/desktop.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import SCREENSHOTS

pytestmark = [pytest.mark.desktop, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
XVFB = "/usr/bin/Xvfb"
IMPORT = "/usr/bin/import"  # ImageMagick; /usr/local/bin/convert here is a stand-in
CONVERT = "/usr/bin/convert"


def colours(png: Path) -> int:
    out = subprocess.run([CONVERT, str(png), "-format", "%k", "info:"], check=True,
                         capture_output=True, text=True, timeout=30)
    return int(out.stdout.strip())


@pytest.fixture
def display() -> Iterator[str]:
    """A private Xvfb on a display number it picks itself (-displayfd); killed at the end."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [XVFB, "-displayfd", str(write_fd), "-screen", "0", "1280x900x24", "-nolisten", "tcp",
         "-noreset"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()  # written once the server accepts clients
        assert number.isdigit(), f"Xvfb did not start: {proc.stderr.read().decode()[-2000:]}"
        yield f":{number}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the desktop app exited ({proc.returncode}) before reporting:\n"
                        f"{out[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no probe report after {timeout} s")
        time.sleep(0.1)


def test_desktop_window_opens_the_login_page(display: str, tmp_path: Path):
    node_xml = tmp_path / "test-node.xml"  # a private copy: the default test-driver URI is shared
    shutil.copyfile(ROOT / "tests" / "data" / "test-node.xml", node_xml)
    probe = tmp_path / "probe.json"
    env = {
        **os.environ,
        "DISPLAY": display,
        "HVP_DESKTOP_PROBE": str(probe),
        "HVP_DESKTOP_PROBE_HOLD": "60",
        "HVP_ADMIN_PASSWORD": "desktop-test-password",
        "QTWEBENGINE_CHROMIUM_FLAGS": "--no-sandbox",
    }
    env.pop("WAYLAND_DISPLAY", None)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "desktop", "--data-dir", str(tmp_path / "data"),
         "--node-uri", f"test://{node_xml}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for(probe, proc, timeout=90)
        report = json.loads(probe.read_text())
        loaded_after = time.monotonic() - started
        assert "error" not in report, report
        assert report["title"] == "Sign in · Hypervisor panel", report
        assert report["path"] == "/login", report
        assert report["login_form"] is True, report
        assert report["stylesheet"] is True, report  # panel.css was served and applied
        assert "Hypervisor panel" in report["text"], report

        # The window is held open: photograph the X display. Painting may lag the load
        # event slightly, so retry until the picture has real content.
        SCREENSHOTS.mkdir(exist_ok=True)
        shot = SCREENSHOTS / "desktop-window.png"
        deadline = time.monotonic() + 15
        while True:
            subprocess.run([IMPORT, "-display", display, "-window", "root", str(shot)],
                           check=True, timeout=30, env={**os.environ, "DISPLAY": display})
            count = colours(shot)
            if count > 10 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert count > 10, f"the display looks blank ({count} colours): {shot}"
    finally:
        probe.with_name(probe.name + ".close").touch()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out[-4000:]
    print(f"window loaded after {loaded_after:.1f} s; screenshot {shot} ({count} colours)")
