"""The desktop window: the same app served on loopback and shown with pywebview.

``python app.py desktop`` starts the panel, serves it on 127.0.0.1 (a free port unless
``--port`` is given) and opens a pywebview window on ``/login``. There is no automatic
sign-in: the user signs in exactly as in a browser, and the window keeps its session cookie
in memory only (private mode), so closing the window signs out.

The window uses pywebview's Qt back end (the ``desktop`` extra, ``pywebview[qt]``). Two
environment settings are made before Qt loads, unless already set:

- ``QT_NO_GLIB=1``: libvirt's event loop thread runs GLib's default main context; Qt's GLib
  event dispatcher (and GTK) would run the same context from the GUI thread, and Qt then
  aborts ("Cannot make QOpenGLContext current in a different thread"). With its own
  dispatcher Qt leaves GLib to libvirt.
- ``QTWEBENGINE_CHROMIUM_FLAGS=--no-sandbox`` when running as root: QtWebEngine refuses to
  start its sandbox as root. The window only shows the panel's own loopback pages.

``HVP_DESKTOP_PROBE=<file>`` is for tests: once the page has loaded, a JSON report of what
the window shows (title, path, ...) is written to ``<file>`` (atomically); the window then
stays open until ``<file>.close`` exists (at most ``HVP_DESKTOP_PROBE_HOLD`` seconds,
default 60), so the test can screenshot the display, and closes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from .web.app import create_app
from .web.server import serve_in_thread

log = logging.getLogger(__name__)

WINDOW_TITLE = "Hypervisor panel"
LOAD_TIMEOUT = 60.0
PROBE_SCRIPT = """JSON.stringify({
  title: document.title,
  path: location.pathname,
  ready: document.readyState,
  login_form: !!document.querySelector('form[action="/login"] input[name="password"]'),
  stylesheet: getComputedStyle(document.body).backgroundImage !== 'none',
  text: (document.body ? document.body.innerText : '').slice(0, 300),
  width: window.innerWidth,
  height: window.innerHeight
})"""


def prepare_qt_environment() -> None:
    """Environment Qt needs next to libvirt (see the module docstring); call before import."""
    os.environ.setdefault("QT_NO_GLIB", "1")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags = os.environ.get("QTWEBENGINE_CHROMIUM_FLAGS", "")
        if "--no-sandbox" not in flags.split():
            os.environ["QTWEBENGINE_CHROMIUM_FLAGS"] = f"{flags} --no-sandbox".strip()


def run_desktop(panel, args: argparse.Namespace) -> int:
    prepare_qt_environment()
    try:
        import webview  # imported late: pywebview is an optional extra
    except ImportError:
        panel.close()
        print("error: the desktop window needs pywebview: pip install 'hypervisor-panel[desktop]'",
              flush=True)
        return 2

    server, port = serve_in_thread(create_app(panel, eval_scripts=True), "127.0.0.1",
                                   args.port or 0)
    url = f"http://127.0.0.1:{port}/login"
    log.info("desktop window on %s", url)
    window = webview.create_window(WINDOW_TITLE, url, width=1200, height=800,
                                   min_size=(800, 560))
    probe = os.environ.get("HVP_DESKTOP_PROBE")

    def on_start() -> None:
        if probe:
            run_probe(window, Path(probe))

    try:
        webview.start(on_start, private_mode=True, gui="qt")
    finally:
        server.stop()
        panel.close()
    return 0


def run_probe(window, probe: Path) -> None:
    """Report what the window shows, hold it open for a screenshot, then close it."""
    report: dict = {}
    try:
        if not window.events.loaded.wait(LOAD_TIMEOUT):
            report = {"error": f"the page did not load within {LOAD_TIMEOUT:.0f} s"}
        else:
            deadline = time.monotonic() + 10
            while True:
                report = json.loads(window.evaluate_js(PROBE_SCRIPT))
                if report.get("ready") == "complete" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    except Exception as exc:  # the report carries the failure to the test
        report = {"error": f"{type(exc).__name__}: {exc}"}
    tmp = probe.with_name(probe.name + ".tmp")
    tmp.write_text(json.dumps(report), encoding="utf-8")
    tmp.replace(probe)
    release = probe.with_name(probe.name + ".close")
    hold = float(os.environ.get("HVP_DESKTOP_PROBE_HOLD", "60"))
    deadline = time.monotonic() + hold
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    window.destroy()


__all__ = ["run_desktop", "prepare_qt_environment"]
